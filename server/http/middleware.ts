import express, { RequestHandler } from 'express';
import { errors } from '../common/errors';
import { bearerOf, hostNameOf, tokenMatches } from './auth';

/** DNS-rebinding defence: only our own names may be in Host. */
export function hostCheck(ownNames: Set<string>): RequestHandler {
  return (req, _res, next) => {
    const name = hostNameOf(req.headers.host);
    if (!name || !ownNames.has(name)) return next(errors.forbidden('Host is not one of this daemon\'s names'));
    next();
  };
}

/** Every route but GET /api/health needs the bearer token. */
export function requireToken(token: string): RequestHandler {
  return (req, _res, next) => {
    if (req.method === 'GET' && req.path === '/api/health') return next();
    if (!tokenMatches(token, bearerOf(req))) return next(errors.unauthorized());
    next();
  };
}

const MAX_BODY = '1mb';
const parseJson = express.json({ limit: MAX_BODY, strict: true, type: () => true });

/** For routes that need a body: JSON of at most 1 MiB, an object. */
export const jsonBody: RequestHandler[] = [
  (req, res, next) => {
    if (!req.is('application/json')) {
      res.status(415).json({ error: { code: 'unsupported_media_type', message: 'the body must be application/json' } });
      return;
    }
    next();
  },
  parseJson,
  (req, _res, next) => {
    if (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) {
      return next(errors.invalid('the body must be a JSON object'));
    }
    next();
  },
];

/** Reads an optional string field, 400 if present and not a string. */
export function optionalString(body: Record<string, unknown>, key: string, max = 1024 * 1024): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length > max) throw errors.invalid(`${key} must be a string`);
  return v;
}
