import type { Context, ExtendableContext, Middleware } from "koa";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError, SessionUsageError } from "../index.js";
import { assertManager, cancelWebBody, claimSession, closeUncommitted, holdErrors, isClaimedBy, isPromiseLike, isResponse } from "./internal/common.js";
import { applyCommit, commitFor, hookBeforeHeaders } from "./internal/node-response.js";

declare module "koa" {
	// ExtendableContext is part of every context type, whatever custom ContextT an app declares.
	interface ExtendableContext {
		/** The request's session, set by `sessionMiddleware`. */
		session: Session<AppSessionData>;
	}
}

/**
 * Koa 3 middleware: sets `ctx.session`, and after the downstream middleware resolves (before
 * Koa writes the response) commits it. `Secure` follows `ctx.secure`, so it honours
 * `app.proxy`. Store errors are thrown, so they reach Koa's error handling (an upstream
 * `try { await next() } catch` or `app.on("error")`) and the response becomes a 500.
 *
 * Nothing is committed for a server error (status 500 or above); a change after it (in a
 * middleware above, once `next()` returns) throws `SessionUsageError`, as one after a commit
 * does. When the downstream
 * middleware throws, its changes are dropped, and what the error handling above changes (a
 * `destroy()` in an upstream `catch` that answers 401, say) is committed just before that
 * answer's headers go out, whoever answers (an upstream middleware, or Koa's own `ctx.onerror`
 * for an error it rethrows), unless the answer is a server error. If that commit fails, Koa's
 * `ctx.onerror` reports it to `app.on("error")` and answers 500 instead (a streamed answer's
 * connection is closed). `app.use` it after your error-handling middleware, so that its
 * errors reach it. If downstream code sent the headers itself (`ctx.respond = false`) before a
 * new cookie could be added, the commit still runs but a `SessionUsageError` is thrown to Koa's
 * error handling (an upstream `catch`, else `app.on("error")`): the browser never got its cookie.
 * If a middleware above fails once the commit is made, Koa's own error answer (even a 500)
 * carries the session's `Set-Cookie`, `Cache-Control` and `Vary`, so that the browser's cookie
 * matches the store (a `renew()` has retired the old token already).
 *
 * Used again further down with the same manager (in a mounted sub-app, on a router), it keeps
 * the session the first one made, and drops the changes of the middleware below it that throws,
 * as the first one does. A `sessionMiddleware` of another manager replaces `ctx.session` below
 * it, and puts the app's back once its `next()` returns, for the middlewares above.
 *
 * @example
 * const app = new Koa();
 * app.use(sessionMiddleware(createSessions({ store })));
 * app.use((ctx) => { ctx.body = `visits: ${ctx.session.increment("visits")}`; });
 */
export function sessionMiddleware<Data extends object = AppSessionData>(sessions: SessionManager<Data>): Middleware {
	assertManager(sessions, "sessionMiddleware");
	return async (ctx, next) => {
		// Used again below (a composed sub-app, a router): the session the first one made is kept.
		const previous = (ctx as unknown as { session?: Session<Data> | null }).session;
		if (isClaimedBy(previous, sessions)) return passThrough(sessions, previous, next);
		let session: Session<Data>;
		try {
			const loaded = sessions.load(ctx.headers.cookie);
			session = isPromiseLike(loaded) ? await loaded : loaded;
		} catch (error) {
			// Error handlers above find a session that throws the store's error when used.
			(ctx as { session: unknown }).session = sessions.unavailable(error);
			throw error;
		}
		// Which manager made it, for a sessionMiddleware of the same manager further down.
		claimSession(session, sessions);
		(ctx as { session: unknown }).session = session;
		try {
			await next();
		} catch (error) {
			commitOnErrorPath(ctx, sessions, session);
			throw error;
		} finally {
			// Below another manager's (a sub-app's): the middlewares above resume after next() and
			// must find their own session, not this one, which is committed on the way up.
			if (previous) (ctx as { session: unknown }).session = previous;
		}
		if (ctx.status >= 500) {
			closeUncommitted(session);
			return;
		}
		let setCookie: string | null;
		try {
			// ctx.secure is a getter: the manager reads it only when a cookie is sent.
			const committed = sessions.commit(session, ctx);
			if (isPromiseLike(committed)) {
				// Koa pipes the body only once the middleware is done. Left listening if the commit
				// fails: that body is never sent.
				const release = holdErrors(ctx.body);
				({ setCookie } = await committed);
				release();
			} else {
				({ setCookie } = committed);
			}
		} catch (error) {
			// Koa destroys a replaced Node stream itself, not a web body.
			cancelWebBody(ctx.body);
			throw error;
		}
		if (setCookie === null) return;
		if (ctx.headerSent) {
			throw new SessionUsageError(
				"the response headers were sent before the session cookie could be set (ctx.respond = false, or a write to ctx.res). Change the session before writing to ctx.res directly.",
			);
		}
		ctx.append("Set-Cookie", setCookie);
		ctx.set("Cache-Control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
		ctx.vary("Cookie");
		keepCookieOnError(ctx, setCookie);
	};
}

/**
 * A second `sessionMiddleware` of the same manager on one request: it keeps the session the
 * first one made (a second load would give the handler another copy of the session, both
 * would be committed, and the response would carry two session cookies, the browser keeping
 * only the last). Like the first, it drops the changes of downstream middleware that throws,
 * so an error handler above it (in a sub-app, say) sees the session as it was before them.
 */
async function passThrough<Data extends object>(sessions: SessionManager<Data>, session: Session<Data>, next: () => Promise<unknown>): Promise<void> {
	try {
		await next();
	} catch (error) {
		sessions.discard(session);
		throw error;
	}
}

/**
 * The commit is made and its cookie set; a middleware above may still fail, and Koa's own
 * `ctx.onerror` then answers with a fresh head, every header removed: the browser would keep a
 * cookie the store no longer matches (after a `renew()`, a retired token: the user is logged
 * out). As on Fastify, that error answer, even a 500, carries the session cookie, `Cache-Control`
 * and `Vary`. Only on a response that sets the cookie: one closure and one property on `ctx`.
 */
function keepCookieOnError(ctx: Context, setCookie: string): void {
	const onerror = ctx.onerror;
	ctx.onerror = (error: Error): void => {
		// As Koa's: an error after the headers went out, or on a closed connection, is only reported.
		if (error !== null && error !== undefined && !ctx.headerSent && ctx.writable) {
			const res = ctx.res;
			hookBeforeHeaders(res, () => applyCommit(res, { setCookie }), () => {});
		}
		onerror.call(ctx, error);
	};
}

/**
 * The downstream middleware threw: its changes are dropped, and the session is committed just
 * before whoever handles the error sends the headers (the error handling runs after this
 * middleware has returned). The machinery of the node:http adapter, since Koa runs on
 * node:http; the success path above does without it.
 */
function commitOnErrorPath<Data extends object>(ctx: Context, sessions: SessionManager<Data>, session: Session<Data>): void {
	sessions.discard(session);
	// Headers already sent (ctx.respond = false): nothing can carry a cookie any more.
	if (ctx.headerSent) {
		closeUncommitted(session);
		return;
	}
	const res = ctx.res;
	hookBeforeHeaders(
		res,
		(statusCode) => commitFor(res, sessions, session, ctx, statusCode),
		(error) => errorPathCommitFailed(ctx, error),
	);
}

/**
 * Koa's own `ctx.onerror` reports the failure to `app.on("error")` and answers 500 (the hook
 * lets that answer through). A body Koa is already piping cannot be replaced: the connection
 * is closed instead, which also stops that body.
 */
function errorPathCommitFailed(ctx: Context, error: unknown): void {
	if (isPiped(ctx.body)) ctx.res.destroy();
	ctx.onerror(error as Error);
}

/** A body Koa pipes into the response (a Node or web stream, a Blob, a Response) instead of sending it with one `end`. */
function isPiped(body: unknown): boolean {
	if (typeof body !== "object" || body === null) return false;
	return typeof (body as { pipe?: unknown }).pipe === "function" || body instanceof ReadableStream || body instanceof Blob || isResponse(body);
}

/**
 * `ctx.session`, or `SessionNotLoadedError` when `sessionMiddleware` did not run for this
 * request (it is missing, or installed below this middleware).
 *
 * @example
 * router.get("/me", (ctx) => { ctx.body = getSession<{ userId: number }>(ctx).get("userId") ?? null; });
 */
export function getSession<Data extends object = AppSessionData>(ctx: ExtendableContext): Session<Data> {
	const session = (ctx as { session?: unknown }).session;
	if (session === undefined) throw new SessionNotLoadedError("sessionMiddleware(sessions)");
	return session as Session<Data>;
}
