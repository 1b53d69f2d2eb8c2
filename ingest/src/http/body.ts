import type { HttpResponse } from 'uWebSockets.js';
import { sendError, type Ctx } from './respond.js';

/**
 * Reads a request body up to `cap` bytes and hands it over as a string. The common case, a body in
 * one chunk, is decoded straight from uWS's buffer with no copy (the buffer is only valid during
 * the callback, so decoding happens inside it). Over the cap: 413 and the connection is closed.
 */
export function readBody(
  res: HttpResponse,
  ctx: Ctx,
  cap: number,
  declaredLength: string,
  done: (body: string) => void,
): void {
  if (declaredLength !== '' && Number(declaredLength) > cap) {
    sendError(res, ctx, 'payload_too_large', `the body must be at most ${cap} bytes`, undefined, undefined, true);
    return;
  }
  let parts: Buffer[] | undefined;
  let size = 0;
  res.onData((ab, isLast) => {
    if (ctx.aborted) return;
    size += ab.byteLength;
    if (size > cap) {
      sendError(res, ctx, 'payload_too_large', `the body must be at most ${cap} bytes`, undefined, undefined, true);
      return;
    }
    if (isLast && parts === undefined) {
      done(Buffer.from(ab).toString('utf8'));
      return;
    }
    (parts ??= []).push(Buffer.from(Buffer.from(ab))); // copy: uWS reuses ab after the callback
    if (isLast) done(Buffer.concat(parts, size).toString('utf8'));
  });
}
