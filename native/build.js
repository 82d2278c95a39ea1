// Builds agentd's native helper (native/helper.c: malloc_trim, dup) at install time.
// Optional: without it agentd runs the same, but memory freed after a burst of
// output stays with the process instead of going back to the OS, and floods of
// output are read on the event loop.
'use strict';
const { spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, rmSync } = require('node:fs');
const { join } = require('node:path');

const BUILT = join(__dirname, 'build', 'Release', 'agentd_native.node');
// `node-gyp rebuild` deletes the build folder first: a rebuild that fails (no compiler, no
// Node headers offline) would take a working helper with it. Keep a copy to put back.
const KEPT = join(__dirname, 'agentd_native.node.previous');

/** Runs a file operation of this optional step; a failure (a read-only folder) only costs the kept copy. */
function tryTo(what, op) {
  try {
    op();
    return true;
  } catch (err) {
    console.warn(`agentd: ${what}: ${err.message}`);
    return false;
  }
}

const hadOne = existsSync(BUILT) && tryTo('keeping the native helper built before', () => copyFileSync(BUILT, KEPT));
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
const result = spawnSync(cmd, [...args, 'rebuild', '--loglevel=warn', '-C', __dirname], { stdio: 'inherit' });
const restored =
  result.status !== 0 &&
  hadOne &&
  tryTo('putting back the native helper built before', () => {
    mkdirSync(join(__dirname, 'build', 'Release'), { recursive: true });
    copyFileSync(KEPT, BUILT);
  });
if (restored) {
  console.warn('agentd: rebuilding the optional native helper (native/helper.c) failed; the helper built before is kept (if it was built for another Node version, agentd runs without it: "agentd doctor" says which).');
} else if (result.status !== 0) {
  console.warn('agentd: the optional native helper (native/helper.c) was not built: agentd works, but returns memory to the OS less eagerly and reads terminals on its event loop. Run "npm rebuild" once a C compiler and node-gyp work (offline, node-gyp also needs the Node headers: npm_config_nodedir=/usr with Debian\'s nodejs headers, or a local copy).');
}
tryTo('removing the kept copy', () => rmSync(KEPT, { force: true }));
