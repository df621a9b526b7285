import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SessionNotLoadedError, SessionUsageError } from "../index.js";
import { isPromiseLike } from "./internal/common.js";
import { commitFor, hookBeforeHeaders } from "./internal/node-response.js";

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
	if (res.headersSent) {
		// Mid-body, the client must see the response is incomplete. After the handler's end, it
		// is whole: cutting it would truncate what is still being flushed.
		if (!res.writableEnded) res.destroy();
		return;
	}
	res.statusCode = 500;
	res.setHeader("Content-Type", "text/plain; charset=utf-8");
	res.end("Internal Server Error");
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
	readonly #req: IncomingMessage;

	constructor(req: IncomingMessage, res: ServerResponse, session: Session<object>, binding: Binding) {
		this.session = session;
		this.res = res;
		this.binding = binding;
		this.#req = req;
	}

	get secure(): boolean {
		return isSecureRequest(this.#req, this.binding.trustProxy);
	}
}

type RequestWithContext = IncomingMessage & { [CONTEXT]?: RequestContext };

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
 * server error (status 500 or above). A request whose handler never calls `getSession` writes
 * nothing and sets no cookie (with a synchronous store it costs no store call at all).
 *
 * A `withSessions` of the same manager inside another (a router's handler wrapped on its own,
 * called by the app's wrapped handler) keeps the session the outer one made, which commits it.
 * If the inner handler throws, the request's changes are dropped and its own `onError` answers.
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
	function run(req: IncomingMessage, res: ServerResponse, session: Session<object>): void | Promise<void> {
		const context = new RequestContext(req, res, session, binding);
		(req as RequestWithContext)[CONTEXT] = context;
		hookCommit(req, res, context, binding);
		return call(req, res, context);
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
	function failed(req: IncomingMessage, res: ServerResponse, error: unknown): void {
		(req as RequestWithContext)[CONTEXT] = new RequestContext(req, res, binding.sessions.unavailable(error), binding);
		binding.onError(error, req, res);
	}
	return (req, res) => {
		// Inside a withSessions of the same manager (the app's handler wraps a router's, itself
		// wrapped): the session that one made is kept, and committed by it. Loaded again, it would
		// miss the changes made before, and both would be committed: two cookies for a new session.
		const outer = (req as RequestWithContext)[CONTEXT];
		if (outer !== undefined && outer.binding.sessions === binding.sessions) return call(req, res, outer);
		let loaded: Session<Data> | Promise<Session<Data>>;
		try {
			loaded = sessions.load(req.headers.cookie);
		} catch (error) {
			failed(req, res, error);
			return;
		}
		if (!isPromiseLike(loaded)) return run(req, res, loaded as Session<object>);
		return loaded.then(
			(session) => run(req, res, session as Session<object>),
			(error: unknown) => failed(req, res, error),
		);
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
