// Builds agentd's native helper (native/helper.c: malloc_trim, dup) at install time.
// Optional: without it agentd runs the same, but memory freed after a burst of
// output stays with the process instead of going back to the OS.
'use strict';
const { spawnSync } = require('node:child_process');

const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
const result = spawnSync(cmd, [...args, 'rebuild', '--loglevel=warn', '-C', __dirname], { stdio: 'inherit' });
if (result.status !== 0) {
  console.warn('agentd: the optional native helper (native/helper.c) was not built: agentd works, but returns memory to the OS less eagerly and reads terminals on its event loop. Run "npm rebuild" once a C compiler and node-gyp work.');
}
