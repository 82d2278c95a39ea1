import { delimiter } from 'node:path';

/** Variables npm sets for a script beside its `npm_*` ones (EDITOR is kept: it may be the user's own). */
const NPM_SET = ['INIT_CWD', 'NODE', 'COLOR'];

/** A PATH folder npm puts first for a script: a `node_modules/.bin` of the package or a parent, or npm's node-gyp-bin. */
function isNpmPathDir(dir: string): boolean {
  return /(^|\/)node_modules\/\.bin\/?$/.test(dir) || /\/@npmcli\/run-script\/lib\/node-gyp-bin\/?$/.test(dir);
}

/**
 * The environment as the user's own terminal has it, when npm started the
 * daemon (`npm start`, `npx agentd`): npm puts this package's
 * `node_modules/.bin` first on PATH — where its devDependencies, pinned
 * builds of claude and codex among them, would shadow the user's own — and
 * adds dozens of `npm_*` variables. Agents are looked up, and sessions
 * started, without them. Anything else, or a daemon not started by npm, is
 * left as it is.
 */
export function withoutNpmScriptEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (!env.npm_lifecycle_event && !env.npm_command) return env;
  const out: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith('npm_') && !NPM_SET.includes(key)) out[key] = value;
  }
  if (env.PATH !== undefined) {
    out.PATH = env.PATH.split(delimiter)
      .filter((dir) => !isNpmPathDir(dir))
      .join(delimiter);
  }
  return out;
}

/** Replaces this process's environment with withoutNpmScriptEnv's, in place. */
export function dropNpmScriptEnv(): void {
  const clean = withoutNpmScriptEnv(process.env);
  if (clean === process.env) return;
  for (const key of Object.keys(process.env)) if (!(key in clean)) delete process.env[key];
  if (clean.PATH !== undefined) process.env.PATH = clean.PATH;
}
