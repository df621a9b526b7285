/**
 * Helpers shared by the adapters. Web-standard code only (no `node:`
 * imports), so the Hono adapter stays runnable on Bun, Deno and Workers. Never exported.
 */
import type { SessionManager } from "../../index.js";
import { SessionConfigError } from "../../index.js";
import { ADAPTER_SLOT, CLOSE } from "../../core/session.js";

// The core's own test for "still running", so adapters and core agree on what a promise is.
export { isPromiseLike } from "../../core/steps.js";

/**
 * Marks `session` as the one `sessions`' middleware made for the request (Koa, Hono), so that a
 * middleware of the same manager further down (a sub-app's, a router's) keeps it.
 */
export function claimSession(session: Slotted, sessions: object): void {
	session[ADAPTER_SLOT] = sessions;
}

/** True if `sessions`' middleware made `session` (see `claimSession`). */
export function isClaimedBy<S extends Slotted>(session: S | null | undefined, sessions: object): session is S {
	return session?.[ADAPTER_SLOT] === sessions;
}

/** A session, as far as `claimSession` needs it. */
type Slotted = { [ADAPTER_SLOT]: unknown };

/**
 * Ends the session's request without a commit (a server error's changes are never saved): a
 * change after this throws `SessionUsageError`, as one after a commit does, instead of being
 * silently lost. The core's own mark, which `commit` sets as it starts.
 */
export function closeUncommitted(session: { [CLOSE](): boolean }): void {
	session[CLOSE]();
}

/** A Web `Response` (by its tag, as Fastify tells one, so a polyfill's counts too). */
export function isResponse(value: unknown): value is Response {
	// typeof first: the usual body is a string, and Fastify's onSend asks on every reply.
	return typeof value === "object" && value !== null && Object.prototype.toString.call(value) === "[object Response]";
}

/**
 * Cancels a web body that the error response replaces (a `ReadableStream`, or a `Response`'s),
 * so that its producer stops: a stream callback hears `onAbort`, a proxied body frees its
 * upstream connection.
 */
export function cancelWebBody(body: unknown): void {
	const stream = isResponse(body) ? body.body : body;
	if (stream instanceof ReadableStream) stream.cancel().catch(() => {});
}

/** Matches a `Vary` value that already covers the `Cookie` request header (or everything, `*`). */
const COVERS_COOKIE = /(^|,)\s*(cookie|\*)\s*(,|$)/i;

/**
 * The `Vary` value to send once the response sets the session cookie: `current` with `Cookie`
 * added, or `current` unchanged when it already covers cookies.
 */
export function varyWithCookie(current: string | null | undefined): string {
	if (!current) return "Cookie";
	return COVERS_COOKIE.test(current) ? current : `${current}, Cookie`;
}

/**
 * Throws `SessionConfigError` at setup time when `sessions` is not what `createSessions`
 * returns (a forgotten argument, or the options object passed instead of the manager).
 */
export function assertManager(sessions: unknown, where: string): asserts sessions is SessionManager<object> {
	const candidate = sessions as Partial<SessionManager<object>> | null | undefined;
	if (typeof candidate?.load !== "function" || typeof candidate.commit !== "function") {
		throw new SessionConfigError("sessions", `must be the manager returned by createSessions(), passed to ${where}; got ${sessions === null ? "null" : typeof sessions}.`);
	}
}

/** True when the first `X-Forwarded-Proto` value (the scheme the client used with the outermost proxy) is `https`. */
export function forwardedHTTPS(header: string | null | undefined): boolean {
	if (!header) return false;
	const comma = header.indexOf(",");
	return (comma < 0 ? header : header.slice(0, comma)).trim().toLowerCase() === "https";
}

/**
 * What `commit` asks of the request: `secure` is worked out by `decide` only when it is read,
 * that is when a cookie is sent with `secure: "auto"`. A class, because a getter in an object
 * literal gives each request's object a hidden class of its own, which cost more in garbage
 * collection than the rest of a middleware.
 */
export class CommitRequest<Source> {
	readonly #source: Source;
	readonly #trustProxy: boolean;
	readonly #decide: (source: Source, trustProxy: boolean) => boolean;

	constructor(source: Source, trustProxy: boolean, decide: (source: Source, trustProxy: boolean) => boolean) {
		this.#source = source;
		this.#trustProxy = trustProxy;
		this.#decide = decide;
	}

	get secure(): boolean {
		return this.#decide(this.#source, this.#trustProxy);
	}
}

const ignore = (): void => {};

/** A Node stream, as far as `holdErrors` needs it. */
type ErrorEmitter = { pipe: unknown; on(event: "error", listener: () => void): unknown; off(event: "error", listener: () => void): unknown };

/**
 * Listens to the errors of a Node stream body while an asynchronous commit runs; returns what
 * stops listening. Fastify and Koa listen to a body's errors only once they pipe it: until then,
 * one (a file that does not exist) would be an uncaught 'error' event that ends the process. The
 * stream stays errored, so the framework still finds the error when it pipes it.
 */
export function holdErrors(body: unknown): () => void {
	const stream = body as Partial<ErrorEmitter> | null;
	if (typeof stream?.pipe !== "function" || typeof stream.on !== "function" || typeof stream.off !== "function") return ignore;
	const emitter = stream as ErrorEmitter;
	emitter.on("error", ignore);
	return () => emitter.off("error", ignore);
}
