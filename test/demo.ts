// `npm run demo` (scripts/demo.sh, README "Try it"): prints the demo story of demo-story.ts
// and exits 1 when a step is not as the story expects. Needs root; removes its sandbox.
import { runDemo } from './demo-story.js';

runDemo((text) => console.log(text)).catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
