// The README's "Try it" story, run by CI: the very runDemo that `npm run demo` (scripts/demo.sh)
// runs, which throws when a step's exit status or result is not what the story expects and
// removes its sandbox whatever happened. The story is printed only when it fails.
import { expect, it } from 'vitest';
import { runDemo } from '../demo-story.js';

it('the demo story (README "Try it") runs as the README tells it', async () => {
  const story: string[] = [];
  try {
    await runDemo((text) => story.push(text));
  } catch (error) {
    console.log(story.join('\n'));
    throw error;
  }
  expect(story.at(-1)).toBe('\nSandbox removed: nothing left mounted or attached.');
});
