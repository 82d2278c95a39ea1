/**
 * The one catalogue of errors. Each has a stable machine code and an HTTP
 * status; the domain throws `AppError`s and one express handler turns them into
 * `{"error":{code,message}}`. docs/errors.md lists them.
 */
export const ERROR_STATUS = {
  invalid_request: 400,
  path_not_allowed: 400,
  agent_unavailable: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  session_limit: 429,
  internal: 500,
  memory_limit: 503,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class AppError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = 'AppError';
    this.status = ERROR_STATUS[code];
  }
}

export const errors = {
  invalid: (message: string) => new AppError('invalid_request', message),
  notFound: (what: string) => new AppError('not_found', `${what} not found`),
  conflict: (message: string) => new AppError('conflict', message),
  pathNotAllowed: (message: string) => new AppError('path_not_allowed', message),
  agentUnavailable: (message: string) => new AppError('agent_unavailable', message),
  sessionLimit: (max: number) =>
    new AppError('session_limit', `the limit of ${max} live sessions is reached; close one first`),
  memoryLimit: (usedMB: number, maxMB: number) =>
    new AppError('memory_limit', `sessions use ${usedMB} MB of the ${maxMB} MB allowed in total; new sessions are refused until memory is freed`),
  unauthorized: () => new AppError('unauthorized', 'a valid bearer token is required'),
  forbidden: (message: string) => new AppError('forbidden', message),
  stopping: () => new AppError('unavailable', 'the daemon is stopping; nothing new starts until it is back'),
  inputBacklog: (maxMiB: number) =>
    new AppError('unavailable', `input refused: the program has not read the last ${maxMiB} MiB of input yet (it is not reading its terminal); nothing was written, try again later`),
};

/** Headers on every answer, also those written without express (refused upgrades, what Node's parser refuses). */
export const COMMON_HEADERS: Readonly<Record<string, string>> = { 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer' };

export function errorBody(code: ErrorCode, message: string): { error: { code: ErrorCode; message: string } } {
  return { error: { code, message } };
}
