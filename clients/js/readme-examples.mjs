// Writes each ```js example of README.md to .readme-examples/example-N.ts,
// so `tsc` checks the README's code against pairgate.d.ts (npm run
// typecheck): an example that the declarations do not accept, or that
// uses the API other than they say, fails the check.
//
// The page example imports "./static/pairgate.js" (its URL on the gateway):
// here that is this directory's pairgate.js. The functions an example calls
// but leaves to the reader (show, print, ...) are declared in typecheck.ts.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, ".readme-examples");
const readme = readFileSync(path.join(here, "README.md"), "utf8");
const blocks = [...readme.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
if (blocks.length === 0) throw new Error("README.md has no ```js example: nothing to check");

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
blocks.forEach((code, i) => {
  const source = code.replaceAll('"./static/pairgate.js"', '"../pairgate.js"');
  const header = `// README.md's example ${i + 1}, extracted by readme-examples.mjs: do not edit.\n`;
  // `export {}`: a module, even if the example imports nothing.
  writeFileSync(path.join(out, `example-${i + 1}.ts`), header + source + "\nexport {};\n");
});
console.log(`readme-examples: ${blocks.length} examples to .readme-examples/`);
