// The client's size as an app ships it: dist/index.js bundled and minified by esbuild, gzipped.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const out = await build({
  entryPoints: [new URL("../dist/index.js", import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  write: false,
});
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 });
console.log(`@latchkey/client: ${code.length} bytes minified, ${gz.length} bytes minified+gzipped`);
