// esbuild inject: gives bundled ES modules that read import.meta.url a value in CommonJS output.
export const __bootenv_import_meta_url = require('node:url').pathToFileURL(__filename).href;
