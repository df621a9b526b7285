import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SessionNotLoadedError, SessionUsageError } from "../index.js";
import { isPromiseLike } from "./internal/common.js";
import { answerServerError, commitFor, hookBeforeHeaders } from "./internal/node-response.js";

export { applyCommit, beforeHeaders } from "./internal/node-response.js";

/** Options of {@link withSessions}. */
export interface NodeSessionOptions {
	/** Trust `X-Forwarded-Proto: https` from a reverse proxy when deciding `Secure`. @default false */
	trustProxy?: boolean;
	/**
	 * Answers a request whose session could not be loaded or committed, or whose handler threw.
	 * One that answers a failed commit asynchronously, while the handler is still writing its
	 * body, finds the response cut off (`res.headersSent` reads true).
	 * @default a plain 500; once the headers are sent, it cuts off a response the handler has not
	 * ended, and leaves an ended one as sent. It logs the error with `console.error`.
	 */
	onError?: (error: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

/** True when the request reached us over TLS, or (with `trustProxy`) a proxy says it did. */
export function isSecureRequest(req: IncomingMessage, trustProxy: boolean): boolean {
	if ((req.socket as TLSSocket).encrypted) return true;
	if (!trustProxy) return false;
	const proto = req.headers["x-forwarded-proto"];
	const first = (Array.isArray(proto) ? proto[0] : proto)?.split(",")[0]?.trim().toLowerCase();
	return first === "https";
}

function defaultOnError(error: unknown, _req: IncomingMessage, res: ServerResponse): void {
	console.error(error);
	answerServerError(res);
}

const CONTEXT = Symbol("sessionkit.request");

interface Binding {
	readonly sessions: SessionManager<object>;
	readonly trustProxy: boolean;
	readonly onError: (error: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

/**
 * What `getSession` finds on a request inside `withSessions`, and what the commit asks of the
 * request (`secure`, worked out only when a cookie is sent).
 */
class RequestContext {
	readonly session: Session<object>;
	readonly res: ServerResponse;
	/** Set by the first `getSession`, which must come before the headers are sent. */
	used = false;
	/** The `withSessions` that made it: one of the same manager inside it keeps its session. */
	readonly binding: Binding;
	/** The context of the `withSessions` (of another manager) this one's is inside, if any. */
	readonly outer: RequestContext | undefined;
	readonly #req: IncomingMessage;

	constructor(req: IncomingMessage, res: ServerResponse, session: Session<object>, binding: Binding, outer: RequestContext | undefined) {
		this.session = session;
		this.res = res;
		this.binding = binding;
		this.outer = outer;
		this.#req = req;
	}

	get secure(): boolean {
		return isSecureRequest(this.#req, this.binding.trustProxy);
	}
}

type RequestWithContext = IncomingMessage & { [CONTEXT]?: RequestContext };

/** The context that `sessions`' `withSessions` made for the request: `context`, or one it is inside. */
function contextOf(context: RequestContext, sessions: SessionManager<object>): RequestContext | undefined {
	for (let at: RequestContext | undefined = context; at !== undefined; at = at.outer) if (at.binding.sessions === sessions) return at;
	return undefined;
}

/**
 * A nested `withSessions` ran its handler with its own context: once that handler's promise
 * settles, `getSession` finds `previous` again (the handler around it resumes). Not after a
 * synchronous return: callbacks the handler left behind (a `req.on("end")` listener) still need
 * its own.
 */
function restoreAfter(req: IncomingMessage, previous: RequestContext, result: void | Promise<void>): void | Promise<void> {
	if (result === undefined) return;
	return result.then(() => {
		(req as RequestWithContext)[CONTEXT] = previous;
	});
}

/**
 * Hooks the commit onto the response before the handler runs, used or not. Not on the first
 * `getSession`: in `res.end(String(getSession(req)…))`, `res.end` is looked up before
 * `getSession` runs, so node's own `end` would write the body while a commit to an asynchronous
 * store still held the headers back. A session the handler never used commits as a no-op.
 */
function hookCommit(req: IncomingMessage, res: ServerResponse, context: RequestContext, binding: Binding): void {
	hookBeforeHeaders(
		res,
		(statusCode) => commitFor(res, binding.sessions, context.session, context, statusCode),
		(error) => binding.onError(error, req, res),
	);
}

/** The handler's changes are dropped; those `onError` makes (a `destroy()`, say) are committed. */
function handlerFailed(error: unknown, context: RequestContext, req: IncomingMessage, binding: Binding): void {
	binding.sessions.discard(context.session);
	binding.onError(error, req, context.res);
}

/**
 * Wraps a node:http handler so that each request has a session (read it with
 * `getSession(req)`), committed before the response headers are sent.
 *
 * A handler that throws (or whose promise rejects) has its changes dropped, whatever status
 * `onError` answers with; changes `onError` makes are committed. Nothing is committed for a
 * server error (status 500 or above), and a change after it (in a `res.on("finish")` listener)
 * throws `SessionUsageError`, as one after a commit does. A request whose handler never calls
 * `getSession` writes nothing and sets no cookie (with a synchronous store it costs no store call
 * at all).
 *
 * A `withSessions` of the same manager inside another (a router's handler wrapped on its own,
 * called by the app's wrapped handler), even with one of another manager in between, keeps the
 * session the outer one made, which commits it. If the inner handler throws, the request's
 * changes are dropped and its own `onError` answers. One of another manager loads its own
 * session, and both are committed, each with its cookie: `getSession(req)` gives the session of
 * the innermost `withSessions` entered, and that of the one around it again once the inner
 * handler's promise settles. After an inner handler that returns synchronously it still gives
 * the inner one's, which the callbacks that handler left behind (`req.on("end", …)`) need.
 *
 * @example
 * const server = http.createServer(withSessions(sessions, (req, res) => {
 *   const session = getSession(req);
 *   res.end(`visits: ${session.increment("visits")}`);
 * }));
 */
export function withSessions<Data extends object = AppSessionData>(
	sessions: SessionManager<Data>,
	handler: (req: IncomingMessage, res: ServerResponse) => unknown,
	options: NodeSessionOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void | Promise<void> {
	const binding: Binding = {
		sessions: sessions as unknown as SessionManager<object>,
		trustProxy: options.trustProxy ?? false,
		onError: options.onError ?? defaultOnError,
	};
	function run(req: IncomingMessage, res: ServerResponse, session: Session<object>, outer: RequestContext | undefined): void | Promise<void> {
		const context = new RequestContext(req, res, session, binding, outer);
		(req as RequestWithContext)[CONTEXT] = context;
		hookCommit(req, res, context, binding);
		const result = call(req, res, context);
		return outer === undefined ? result : restoreAfter(req, outer, result);
	}
	function call(req: IncomingMessage, res: ServerResponse, context: RequestContext): void | Promise<void> {
		let result: unknown;
		try {
			result = handler(req, res);
		} catch (error) {
			handlerFailed(error, context, req, binding);
			return;
		}
		if (isPromiseLike(result)) return Promise.resolve(result).then(undefined, (error: unknown) => handlerFailed(error, context, req, binding));
	}
	/** The load failed: `getSession` in `onError` finds a session that throws the store's error when used. */
	function failed(req: IncomingMessage, res: ServerResponse, error: unknown, outer: RequestContext | undefined): void {
		(req as RequestWithContext)[CONTEXT] = new RequestContext(req, res, binding.sessions.unavailable(error), binding, outer);
		binding.onError(error, req, res);
	}
	function load(req: IncomingMessage, res: ServerResponse, outer: RequestContext | undefined): void | Promise<void> {
		let loaded: Session<Data> | Promise<Session<Data>>;
		try {
			loaded = sessions.load(req.headers.cookie);
		} catch (error) {
			failed(req, res, error, outer);
			return;
		}
		if (!isPromiseLike(loaded)) return run(req, res, loaded as Session<object>, outer);
		return loaded.then(
			(session) => run(req, res, session as Session<object>, outer),
			(error: unknown) => failed(req, res, error, outer),
		);
	}
	/** Inside another `withSessions`: of the same manager, its session is kept; of another, this one's is loaded too. */
	function nested(req: IncomingMessage, res: ServerResponse, current: RequestContext): void | Promise<void> {
		// Loaded again, the session would miss the changes made before, and both copies would be
		// committed: two cookies for a new session.
		const own = contextOf(current, binding.sessions);
		if (own === undefined) return load(req, res, current);
		if (own === current) return call(req, res, own);
		// Inside one of another manager, itself inside one of this manager's.
		(req as RequestWithContext)[CONTEXT] = own;
		return restoreAfter(req, current, call(req, res, own));
	}
	return (req, res) => {
		const current = (req as RequestWithContext)[CONTEXT];
		return current === undefined ? load(req, res, undefined) : nested(req, res, current);
	};
}

/** The session of a request inside `withSessions`; throws `SessionNotLoadedError` outside it. */
export function getSession<Data extends object = AppSessionData>(req: IncomingMessage): Session<Data> {
	const context = (req as RequestWithContext)[CONTEXT];
	if (!context) throw new SessionNotLoadedError("withSessions(sessions, handler)");
	if (!context.used) {
		// The commit ran (as a no-op) when the headers went out: a change now would be lost.
		if (context.res.headersSent) {
			throw new SessionUsageError("getSession(req) was first called after the response headers were sent, so the session could not be saved. Call it before writing the response.");
		}
		context.used = true;
	}
	return context.session as Session<Data>;
}
