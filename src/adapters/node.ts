import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { AppSessionData, CommitResult, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError, SessionUsageError } from "../index.js";
import { isPromiseLike } from "./internal/common.js";

/** Options of {@link withSessions}. */
export interface NodeSessionOptions {
	/** Trust `X-Forwarded-Proto: https` from a reverse proxy when deciding `Secure`. @default false */
	trustProxy?: boolean;
	/** Answers a request whose session could not be loaded or committed, or whose handler threw. @default a plain 500 */
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

/** Adds the session cookie and the headers that keep caches from storing or sharing it. */
export function applyCommit(res: ServerResponse, result: CommitResult): void {
	if (result.setCookie === null) return;
	res.appendHeader("Set-Cookie", result.setCookie);
	res.setHeader("Cache-Control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
	const vary = res.getHeader("Vary");
	const current = Array.isArray(vary) ? vary.join(", ") : vary === undefined ? "" : String(vary);
	if (!/(^|,)\s*(cookie|\*)\s*(,|$)/i.test(current)) res.setHeader("Vary", current ? `${current}, Cookie` : "Cookie");
}

const HOOK = Symbol("sessionkit.beforeHeaders");

interface Hook {
	readonly commit: (statusCode: number) => void | PromiseLike<void>;
	readonly onError: (error: unknown) => void;
	readonly writeHead: ServerResponse["writeHead"];
	readonly write: ServerResponse["write"];
	readonly end: ServerResponse["end"];
	readonly flushHeaders: ServerResponse["flushHeaders"];
	phase: "waiting" | "committing" | "done";
	/** Calls made while an asynchronous commit runs, replayed in order after it. */
	queue: Array<() => void>;
}

type HookedResponse = ServerResponse & { [HOOK]?: Hook };

function restore(res: HookedResponse, hook: Hook): void {
	res.writeHead = hook.writeHead;
	res.write = hook.write;
	res.end = hook.end;
	res.flushHeaders = hook.flushHeaders;
	hook.phase = "done";
}

/**
 * Starts the commit on the first call that would send headers. "now": the commit is done (it
 * finished synchronously, or earlier), so the call goes through; "later": the call was queued
 * behind a running commit; "dropped": the commit failed and `onError` answers instead.
 */
function settle(res: HookedResponse, hook: Hook, statusCode: number, call: () => void): "now" | "later" | "dropped" {
	if (hook.phase === "done") return "now";
	hook.queue.push(call);
	if (hook.phase === "committing") return "later";
	hook.phase = "committing";
	let result: void | PromiseLike<void>;
	try {
		result = hook.commit(statusCode);
	} catch (error) {
		restore(res, hook);
		hook.queue.length = 0;
		hook.onError(error);
		return "dropped";
	}
	if (typeof (result as PromiseLike<void> | undefined)?.then !== "function") {
		restore(res, hook);
		hook.queue.length = 0;
		return "now";
	}
	(result as PromiseLike<void>).then(
		() => {
			restore(res, hook);
			for (const deferred of hook.queue.splice(0)) deferred();
		},
		(error: unknown) => {
			restore(res, hook);
			hook.queue.length = 0;
			hook.onError(error);
		},
	);
	return "later";
}

/**
 * Moves the headers given to `writeHead(status, [message], headers)` onto the response, so the
 * commit adds to them instead of being overwritten by them (Node sets those last): the session
 * cookie joins a `Set-Cookie` the handler passed, and `Cache-Control: no-store` wins.
 */
function takeHeaders(res: ServerResponse, args: unknown[]): unknown[] {
	const last = args[args.length - 1];
	if (args.length < 2 || typeof last !== "object" || last === null) return args;
	const pairs: Array<[string, unknown]> = [];
	if (Array.isArray(last)) {
		// [[name, value], …] or the raw [name, value, name, value, …]
		if (Array.isArray(last[0])) for (const [name, value] of last as Array<[string, unknown]>) pairs.push([name, value]);
		else for (let i = 0; i + 1 < last.length; i += 2) pairs.push([String(last[i]), last[i + 1]]);
	} else {
		for (const name of Object.keys(last)) pairs.push([name, (last as Record<string, unknown>)[name]]);
	}
	for (const [name, value] of pairs) {
		if (value === undefined) continue;
		if (name.toLowerCase() === "set-cookie") res.appendHeader(name, value as string | string[]);
		else res.setHeader(name, value as string | number | string[]);
	}
	return args.slice(0, -1);
}

function hookedWriteHead(this: HookedResponse, ...given: unknown[]): ServerResponse {
	const hook = this[HOOK]!;
	if (hook.phase === "done") {
		(hook.writeHead as (...a: unknown[]) => unknown).apply(this, given);
		return this;
	}
	const args = takeHeaders(this, given);
	const call = () => (hook.writeHead as (...a: unknown[]) => unknown).apply(this, args);
	if (settle(this, hook, typeof args[0] === "number" ? args[0] : this.statusCode, call) === "now") call();
	return this;
}

function hookedWrite(this: HookedResponse, ...args: unknown[]): boolean {
	const hook = this[HOOK]!;
	const call = () => (hook.write as (...a: unknown[]) => unknown).apply(this, args) as boolean;
	return settle(this, hook, this.statusCode, call) === "now" ? call() : true;
}

function hookedEnd(this: HookedResponse, ...args: unknown[]): ServerResponse {
	const hook = this[HOOK]!;
	const call = () => (hook.end as (...a: unknown[]) => unknown).apply(this, args);
	if (settle(this, hook, this.statusCode, call) === "now") call();
	return this;
}

function hookedFlushHeaders(this: HookedResponse): void {
	const hook = this[HOOK]!;
	const call = () => hook.flushHeaders.call(this);
	if (settle(this, hook, this.statusCode, call) === "now") call();
}

/**
 * Runs `commit` once, before the response's headers go out, however the handler writes
 * (`writeHead`, `write`, `end`, `flushHeaders`, a piped stream). A commit that completes
 * synchronously lets the call through at once; while an asynchronous one runs, calls are
 * queued and replayed in order afterwards. If `commit` fails, the queued calls are dropped,
 * the response is left unsent, and `onError` decides what to send.
 *
 * `commit` receives the status code the response is about to be sent with.
 */
export function beforeHeaders(res: ServerResponse, commit: (statusCode: number) => void | PromiseLike<void>, onError: (error: unknown) => void): void {
	const hooked = res as HookedResponse;
	hooked[HOOK] = { commit, onError, writeHead: res.writeHead, write: res.write, end: res.end, flushHeaders: res.flushHeaders, phase: "waiting", queue: [] };
	res.writeHead = hookedWriteHead as ServerResponse["writeHead"];
	res.write = hookedWrite as ServerResponse["write"];
	res.end = hookedEnd as ServerResponse["end"];
	res.flushHeaders = hookedFlushHeaders;
}

function defaultOnError(error: unknown, _req: IncomingMessage, res: ServerResponse): void {
	console.error(error);
	if (res.headersSent) {
		res.destroy();
		return;
	}
	res.statusCode = 500;
	res.setHeader("Content-Type", "text/plain; charset=utf-8");
	res.end("Internal Server Error");
}

const CONTEXT = Symbol("sessionkit.request");

/** What `getSession` finds on a request inside `withSessions`. */
interface RequestContext {
	readonly session: Session<object>;
	readonly res: ServerResponse;
	readonly binding: Binding;
	/** The commit runs before the headers: set up on the first `getSession`. */
	hooked: boolean;
}

interface Binding {
	readonly sessions: SessionManager<object>;
	readonly trustProxy: boolean;
	readonly onError: (error: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

type RequestWithContext = IncomingMessage & { [CONTEXT]?: RequestContext };

function hookCommit(req: IncomingMessage, context: RequestContext): void {
	const { session, res, binding } = context;
	if (res.headersSent) {
		throw new SessionUsageError("getSession(req) was first called after the response headers were sent, so the session could not be saved. Call it before writing the response.");
	}
	context.hooked = true;
	beforeHeaders(
		res,
		(statusCode) => {
			if (statusCode >= 500) return;
			const result = binding.sessions.commit(session, { secure: isSecureRequest(req, binding.trustProxy) });
			if (isPromiseLike(result)) return result.then((settled) => applyCommit(res, settled));
			applyCommit(res, result);
		},
		(error) => binding.onError(error, req, res),
	);
}


/**
 * Wraps a node:http handler so that each request has a session (read it with
 * `getSession(req)`), committed before the response headers are sent.
 *
 * Changes are committed unless the response is a server error (status 500 or above), so a
 * handler that throws after changing the session leaves the session as it was. A request whose
 * handler never calls `getSession` costs no store call and no write.
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
		(req as RequestWithContext)[CONTEXT] = { session, res, binding, hooked: false };
		let result: unknown;
		try {
			result = handler(req, res);
		} catch (error) {
			binding.onError(error, req, res);
			return;
		}
		if (isPromiseLike(result)) return Promise.resolve(result).then(undefined, (error: unknown) => binding.onError(error, req, res));
	}
	return (req, res) => {
		let loaded: Session<Data> | Promise<Session<Data>>;
		try {
			loaded = sessions.load(req.headers.cookie);
		} catch (error) {
			binding.onError(error, req, res);
			return;
		}
		if (!isPromiseLike(loaded)) return run(req, res, loaded as Session<object>);
		return loaded.then(
			(session) => run(req, res, session as Session<object>),
			(error: unknown) => binding.onError(error, req, res),
		);
	};
}

/** The session of a request inside `withSessions`; throws `SessionNotLoadedError` outside it. */
export function getSession<Data extends object = AppSessionData>(req: IncomingMessage): Session<Data> {
	const context = (req as RequestWithContext)[CONTEXT];
	if (!context) throw new SessionNotLoadedError("withSessions(sessions, handler)");
	if (!context.hooked) hookCommit(req, context);
	return context.session as Session<Data>;
}
