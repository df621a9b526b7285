import type { ExtendableContext, Middleware } from "koa";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError, SessionUsageError } from "../index.js";
import { assertManager, cancelWebBody, isPromiseLike } from "./internal/common.js";

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
 * Changes are committed unless the downstream middleware throws or the response is a server
 * error (status 500 or above), so a handler that throws after changing the session leaves the
 * session as it was. `app.use` it after your error-handling middleware, so that its errors
 * reach it. If downstream code sent the headers itself (`ctx.respond = false`) before a new
 * cookie could be added, the commit still runs but a `SessionUsageError` reaches
 * `app.on("error")`: the browser never got its cookie.
 *
 * @example
 * const app = new Koa();
 * app.use(sessionMiddleware(createSessions({ store })));
 * app.use((ctx) => { ctx.body = `visits: ${ctx.session.increment("visits")}`; });
 */
export function sessionMiddleware<Data extends object = AppSessionData>(sessions: SessionManager<Data>): Middleware {
	assertManager(sessions, "sessionMiddleware");
	return async (ctx, next) => {
		const loaded = sessions.load(ctx.headers.cookie);
		const session = isPromiseLike(loaded) ? await loaded : loaded;
		(ctx as { session: unknown }).session = session;
		await next();
		if (ctx.status >= 500) return;
		let setCookie: string | null;
		try {
			// ctx.secure is a getter: the manager reads it only when a cookie is sent.
			const committed = sessions.commit(session, ctx);
			({ setCookie } = isPromiseLike(committed) ? await committed : committed);
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
	};
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
