import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AppError, errorBody } from '../common/errors';
import { Logger } from '../common/log';

/** The one place errors become HTTP answers: `{"error":{code,message}}`, no stacks, no secrets. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent) return;
    if (err instanceof AppError) {
      res.status(err.status).json(errorBody(err.code, err.message));
      return;
    }
    const type = (err as { type?: string }).type;
    if (type === 'entity.too.large') {
      res.status(413).json(errorBody('payload_too_large', 'the body is larger than 1 MiB'));
      return;
    }
    if (type === 'entity.parse.failed') {
      res.status(400).json(errorBody('invalid_request', 'the body is not valid JSON'));
      return;
    }
    if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
      res.status(415).json(errorBody('unsupported_media_type', 'the body must be UTF-8 JSON'));
      return;
    }
    const status = (err as { status?: number; statusCode?: number }).status ?? (err as { statusCode?: number }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      // express's own client errors (e.g. a malformed %-escape in the path).
      res.status(400).json(errorBody('invalid_request', 'malformed request'));
      return;
    }
    logger.error({ err: { message: (err as Error).message, stack: (err as Error).stack }, method: req.method, path: req.path }, 'unhandled error');
    res.status(500).json(errorBody('internal', 'internal error'));
  };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  res.status(404).json(errorBody('not_found', `no route ${req.method} ${req.path}`));
};
