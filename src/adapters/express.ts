import type { NextFunction, Request, RequestHandler, Response } from "express";
import type { AppSessionData, SessionManager } from "../index.js";
import { Session, SessionNotLoadedError, SessionUsageError } from "../index.js";
import { isPromiseLike } from "./internal/common.js";
import { carryHook, commitBeforeHeaders, commitBeforeHeadersInstead, earlierSession, slotOwner } from "./internal/node-response.js";

declare global {
	// biome-ignore lint: Express's own augmentation point is a namespace.
	namespace Express {
		interface Request {
			/**
			 * The request's session, set by `sessionMiddleware`. Set to `null`, it turns the commit off
			 * for the request (see `sessionMiddleware`); it does not log out: call `destroy()` for that.
			 */
			session: Session<AppSessionData>;
		}
	}
}

/**
 * Express 4 and 5 middleware: sets `req.session` and commits it before the response headers
 * go out. Store errors go to `next(err)`, that is to your error handlers. `Secure` follows
 * `req.secure`, so it honours Express's `trust proxy` setting. An error handler that answers a
 * failed commit asynchronously, while the route is still writing its body, finds the response
 * cut off (`res.headersSent` reads true): the rest of the body never goes out without the cookie.
 *
 * Changes are committed unless the response is a server error (status 500 or above), so a
 * handler that throws after changing the session leaves the session as it was, as long as the
 * error handler answers with a server error too: Express does not tell a middleware that a
 * later handler failed, so one that answers a thrown error with a 4xx keeps the changes. After
 * a server error, as after a commit, a change (in a `res.on("finish")` listener) throws
 * `SessionUsageError`.
 *
 * To commit before the headers without writing four methods to each response (slow on
 * Express's responses, whose prototype it swaps per request), the first request gives
 * Express's shared response object its own `writeHead`, `write`, `end` and `flushHeaders`,
 * which find their state for a response on its request's session: nothing is written to the
 * response. They pass straight through to node's for every response with nothing to commit; a
 * response whose methods another middleware already wrapped is hooked on its own instead.
 *
 * Used twice on one request (on the app and again on a router), the second middleware of the
 * same manager keeps the request's session: it loads nothing, and what ran in between is
 * committed with the rest. One of another manager sets its own `req.session`; both are committed,
 * each once, with its own cookie. After that one, a middleware of the first manager again (a, b,
 * a) sets `req.session` back to the first manager's session, as it was, and loads nothing.
 *
 * `req.session = null` (cookie-session's way to log out) does not log out: it turns the commit
 * off for the request, as express-session does. Nothing of the request is saved, not even a
 * `destroy()` or a `renew()`, and the cookie is left as it is. Set it before writing the
 * response. To log out, call `req.session.destroy()`.
 *
 * @example
 * app.use(sessionMiddleware(createSessions({ store })));
 * app.get("/", (req, res) => res.send(`visits: ${req.session.increment("visits")}`));
 */
export function sessionMiddleware<Data extends object = AppSessionData>(sessions: SessionManager<Data>): RequestHandler {
	// The commit is hooked before the handler runs, used or not (an unused session commits as a
	// no-op). Not on the session's first use: in `res.end(String(req.session.get("n")))`, `res.end`
	// is looked up first, and if it is another middleware's wrapper around node's `end`, that
	// `end` would write the body while a commit held the headers back (a commit of a synchronous
	// store waits for an asynchronous `onDestroy` callback).
	function start(req: Request, res: Response, next: NextFunction, session: Session<Data>): void {
		(req as { session: unknown }).session = session;
		commitBeforeHeaders(res, sessions, session, req, next);
		next();
	}
	/** After another manager's middleware: `session` takes the place of `previous`, and both are committed. */
	function startInstead(req: Request, res: Response, next: NextFunction, session: Session<Data>, previous: Session<object>): void {
		(req as { session: unknown }).session = session;
		commitBeforeHeadersInstead(res, sessions, session, req, next, previous);
		next();
	}
	/** Loads the request's session; `previous`: another manager's, which it takes the place of. */
	function load(req: Request, res: Response, next: NextFunction, previous: Session<object> | undefined): void {
		let loaded: Session<Data> | Promise<Session<Data>>;
		try {
			loaded = sessions.load(req.headers.cookie);
		} catch (error) {
			failed(req, next, error, previous);
			return;
		}
		const fail = (error: unknown) => failed(req, next, error, previous);
		if (previous !== undefined) {
			if (isPromiseLike(loaded)) loaded.then((session) => startInstead(req, res, next, session, previous), fail);
			else startInstead(req, res, next, loaded, previous);
		} else if (isPromiseLike(loaded)) loaded.then((session) => start(req, res, next, session), fail);
		else start(req, res, next, loaded);
	}
	/**
	 * The load failed: error handlers find a session that throws the store's error when used.
	 * `previous`, another manager's, is still committed with the error handler's response.
	 */
	function failed(req: Request, next: NextFunction, error: unknown, previous: Session<object> | undefined): void {
		const unavailable = sessions.unavailable(error);
		if (previous !== undefined) carryHook(previous, unavailable as Session<object>, sessions);
		(req as { session: unknown }).session = unavailable;
		next(error);
	}
	return (req: Request, res: Response, next: NextFunction): void => {
		const previous = (req as { session?: unknown }).session;
		if (!(previous instanceof Session)) {
			load(req, res, next, undefined);
			return;
		}
		// This middleware ran already for the request (on the app, and now on a router): loaded
		// again, the session would miss the changes made since, and replaced, it would take its
		// hook along (the shared methods find it through req.session).
		if (slotOwner(previous) === sessions) {
			next();
			return;
		}
		// It ran before one of another manager's (a, b, a): its session comes back, with the hook.
		const own = earlierSession(previous, sessions);
		if (own === undefined) {
			load(req, res, next, previous);
			return;
		}
		carryHook(previous, own, sessions);
		(req as { session: unknown }).session = own;
		next();
	};
}

/**
 * `req.session`, or `SessionNotLoadedError` when `sessionMiddleware` did not run for this request,
 * or `SessionUsageError` once the handler set `req.session = null`.
 */
export function getSession<Data extends object = AppSessionData>(req: Request): Session<Data> {
	const session = (req as { session?: unknown }).session;
	if (session === undefined) throw new SessionNotLoadedError("sessionMiddleware(sessions)");
	if (session === null) throw new SessionUsageError("req.session was set to null, which turns the session off for this request. To log out, call req.session.destroy() instead.");
	return session as Session<Data>;
}
