import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import type { AppSessionData, CommitResult, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError } from "../index.js";

/** Options of {@link withSessions}. */
export interface NodeSessionOptions {
	/** Trust `X-Forwarded-Proto: https` from a reverse proxy when deciding `Secure`. @default false */
	trustProxy?: boolean;
	/** Answers a request whose session could not be loaded or committed, or whose handler threw. @default a plain 500 */
	onError?: (error: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

const sessionsByRequest = new WeakMap<IncomingMessage, Session<object>>();

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

type Deferred = () => void;

/**
 * Runs `commit` once, before the response's headers go out, however the handler writes
 * (`writeHead`, `write`, `end`, `flushHeaders`, a piped stream). Calls made while the commit
 * runs are queued and replayed in order afterwards. If `commit` rejects, the queued calls are
 * dropped, the response is left unsent, and `onError` decides what to send.
 *
 * `commit` receives the status code the response is about to be sent with.
 */
export function beforeHeaders(res: ServerResponse, commit: (statusCode: number) => Promise<void>, onError: (error: unknown) => void): void {
	const writeHead = res.writeHead;
	const write = res.write;
	const end = res.end;
	const flushHeaders = res.flushHeaders;
	let phase: "waiting" | "committing" | "done" = "waiting";
	const queue: Deferred[] = [];

	function restore(): void {
		res.writeHead = writeHead;
		res.write = write;
		res.end = end;
		res.flushHeaders = flushHeaders;
	}

	function defer(call: Deferred, statusCode: number): void {
		queue.push(call);
		if (phase !== "waiting") return;
		phase = "committing";
		commit(statusCode).then(
			() => {
				restore();
				phase = "done";
				for (const deferred of queue.splice(0)) deferred();
			},
			(error: unknown) => {
				restore();
				phase = "done";
				queue.length = 0;
				onError(error);
			},
		);
	}

	res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
		const status = typeof args[0] === "number" ? args[0] : res.statusCode;
		defer(() => (writeHead as (...a: unknown[]) => unknown).apply(res, args), status);
		return res;
	} as ServerResponse["writeHead"];
	res.write = function (this: ServerResponse, ...args: unknown[]) {
		defer(() => (write as (...a: unknown[]) => unknown).apply(res, args), res.statusCode);
		return true;
	} as ServerResponse["write"];
	res.end = function (this: ServerResponse, ...args: unknown[]) {
		defer(() => (end as (...a: unknown[]) => unknown).apply(res, args), res.statusCode);
		return res;
	} as ServerResponse["end"];
	res.flushHeaders = function (this: ServerResponse) {
		defer(() => flushHeaders.call(res), res.statusCode);
	};
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

/**
 * Wraps a node:http handler so that each request has a session (read it with
 * `getSession(req)`), committed before the response headers are sent.
 *
 * Changes are committed unless the response is a server error (status 500 or above), so a
 * handler that throws after changing the session leaves the session as it was.
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
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
	const trustProxy = options.trustProxy ?? false;
	const onError = options.onError ?? defaultOnError;
	return async (req, res) => {
		let session: Session<Data>;
		try {
			session = await sessions.load(req.headers.cookie);
		} catch (error) {
			onError(error, req, res);
			return;
		}
		sessionsByRequest.set(req, session as Session<object>);
		beforeHeaders(
			res,
			async (statusCode) => {
				if (statusCode >= 500) return;
				applyCommit(res, await sessions.commit(session, { secure: isSecureRequest(req, trustProxy) }));
			},
			(error) => onError(error, req, res),
		);
		try {
			await handler(req, res);
		} catch (error) {
			onError(error, req, res);
		}
	};
}

/** The session of a request inside `withSessions`; throws `SessionNotLoadedError` outside it. */
export function getSession<Data extends object = AppSessionData>(req: IncomingMessage): Session<Data> {
	const session = sessionsByRequest.get(req);
	if (!session) throw new SessionNotLoadedError("withSessions(sessions, handler)");
	return session as Session<Data>;
}
