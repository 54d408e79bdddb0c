// Types for the part of ar-async (an untyped CommonJS module) that src/deb/reader.ts uses.
declare module 'ar-async' {
  import type { EventEmitter } from 'node:events';
  import type { ReadStream } from 'node:fs';

  export class ArEntry {
    fileName(): string;
    fileSize(): number;
    fileData(): ReadStream;
  }

  export class ArReader extends EventEmitter {
    constructor(file: string);
    /** The open file descriptor, undefined before "open" and after "close". */
    fd: number | undefined;
    on(event: 'entry', listener: (entry: ArEntry, next: () => void) => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
    on(event: 'end' | 'close' | 'open', listener: () => void): this;
  }
}
