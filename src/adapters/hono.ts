/**
 * The Hono adapter. Web-standard APIs only (Request, Response, Headers): it runs wherever Hono
 * runs, Node (through @hono/node-server), Bun, Deno and Workers alike.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError } from "../index.js";
import { assertManager, cancelWebBody, claimSession, closeUncommitted, CommitRequest, forwardedHTTPS, isClaimedBy, isPromiseLike, varyWithCookie } from "./internal/common.js";

declare module "hono" {
	interface ContextVariableMap {
		/** The request's session, set by `sessionMiddleware`: `c.get("session")`. */
		session: Session<AppSessionData>;
	}
}

/** Options of the Hono {@link sessionMiddleware}. */
export interface HonoSessionOptions {
	/**
	 * Trust `X-Forwarded-Proto: https` from a reverse proxy when deciding `Secure`. Turn it on
	 * only when every request comes through a proxy that sets this header. @default false
	 */
	trustProxy?: boolean;
}

/**
 * Hono 4 middleware: stores the request's session in the context (`c.get("session")`, or
 * `getSession(c)`) and, once the handler has returned its response, commits the session and
 * adds its cookie to that response. Store errors are thrown, so they reach `app.onError`
 * and the response becomes a 500.
 *
 * `Secure` (with `cookie.secure: "auto"`) is set when the request came over TLS, or with
 * `trustProxy` when the proxy says `X-Forwarded-Proto: https`. Under @hono/node-server the socket
 * says so, not the URL, whose scheme a request line in absolute form (`GET https://…`) chooses;
 * elsewhere the URL the runtime gives (`https:`) does.
 *
 * A response with immutable headers (one returned by `fetch`, or
 * `Response.redirect`) is copied so that the cookie can be added, and so is one without a body:
 * a `Response` object the handler returns for every request (a module-level `new Response(null,
 * { status: 204 })`, or a 200 with only a Content-Type) never carries one request's cookie to
 * another, even to one still on its way out or to a route without sessions. A response with a
 * body (read once, so the request's own) gets the cookie itself; returned again, it is answered
 * with a copy without it. Under @hono/node-server, a bodyless Response with a Content-Type made
 * after the server started is its lightweight Response, taken to have a body: make such a shared
 * Response at startup (module level), or return `c.body(null, …)` for each request.
 *
 * Changes are committed unless the response is a server error (status 500 or above), or, under
 * @hono/node-server, an error answer that a middleware above sent without waiting for this one
 * (`hono/timeout`'s, a 408 say), which went out without the cookie. Either way a change made
 * afterwards (by a middleware above, once `next()` returns) throws `SessionUsageError`, as one
 * after a commit does. Elsewhere (Bun, Deno, Workers) such an early answer cannot be told from
 * an `onError` answer below this middleware: Hono gives both as `c.error` and a finalized `c.res`,
 * and the runtime does not say that the response went out. Once the handler returns, its changes
 * are committed and the cookie is added to a response already sent: a `renew()` or a new session
 * leaves the browser with a cookie that leads nowhere. There, register `hono/timeout` after this
 * middleware (its answer then carries the cookie of what the handler changed before it, and a
 * change after it throws), or keep its default answer, a 504, which commits nothing.
 *
 * A handler that throws is answered by `app.onError` before this middleware resumes, and Hono
 * offers no hook in between, so its changes cannot be told from those `onError` makes: when
 * `onError` answers below 500, both are committed (a `destroy()` answered with a 401 ends the
 * session), as on Express; answered with a server error, neither is. A streamed body is fine as long as the session is
 * changed before the handler returns the response; a change inside the stream callback comes
 * after the commit, and throws `SessionUsageError`.
 *
 * Used again further down with the same manager (a sub-app's own middleware, added with
 * `app.route`), it keeps the session the first one made, which commits it: one cookie. One of
 * another manager sets its own session below it, and both cookies go out; the middlewares above
 * it find their own session again once its `next()` returns. Under @hono/node-server, a
 * `Set-Cookie` the app put on the Node response (`c.env.outgoing`) is kept beside the session
 * cookie. An app mounted with `mount()` has a Context of its own, so it does not see this
 * middleware's session: add Hono sub-apps with `app.route`. Its own middleware of another
 * manager works under @hono/node-server only (elsewhere the parent's takes its cookie off, as
 * an earlier request's); one of the same manager loads a second copy of the session, and both
 * copies are committed (a new session gets two cookies, the browser keeps the parent's).
 *
 * Register `etag()` after this middleware: registered before it, its 304 answer keeps only the
 * headers of its `retainedHeaders`, which leave out `Set-Cookie`, so a session created, renewed
 * or refreshed on a revalidated page would lose its cookie.
 *
 * @example
 * const app = new Hono();
 * app.use(sessionMiddleware(createSessions({ store })));
 * app.get("/", (c) => c.text(`visits: ${c.get("session").increment("visits")}`));
 */
export function sessionMiddleware<Data extends object = AppSessionData>(
	sessions: SessionManager<Data>,
	options: HonoSessionOptions = {},
): MiddlewareHandler {
	assertManager(sessions, "sessionMiddleware");
	const trustProxy = options.trustProxy ?? false;
	return async (c, next) => {
		// Used again below (a sub-app's own middleware, through app.route): the session the first
		// one made is kept and committed by it. Loaded again, it would miss the changes made in
		// between, and both would be committed, with two cookies for a new session.
		const previous = c.get("session") as Session<object> | null | undefined;
		if (isClaimedBy(previous, sessions)) return next();
		let session: Session<Data>;
		try {
			const loaded = sessions.load(cookieHeaderOf(c));
			session = isPromiseLike(loaded) ? await loaded : loaded;
		} catch (error) {
			// app.onError finds a session that throws the store's error when used.
			c.set("session", sessions.unavailable(error) as Session<object> as Session<AppSessionData>);
			throw error;
		}
		// Which manager made it, for a sessionMiddleware of the same manager further down.
		claimSession(session, sessions);
		c.set("session", session as Session<object> as Session<AppSessionData>);
		await next();
		// Below another manager's (a sub-app's, through app.route): the middlewares above resume
		// after next() and must find their own session, not this one, which is committed by then.
		if (previous) c.set("session", previous as Session<AppSessionData>);
		let below = cookiesBelow(c);
		// Also after onError (c.error is set): what it changes, a destroy() say, must be committed.
		// Unless a middleware above answered the error without waiting for this one (hono/timeout,
		// even with a 408): that answer went out without the cookie, for a request that failed.
		if (c.res.status >= 500 || (c.error !== undefined && headSent(c))) {
			closeUncommitted(session);
			return;
		}
		let setCookie: string | null;
		try {
			const committed = sessions.commit(session, new CommitRequest(c, trustProxy, isSecureHono));
			if (isPromiseLike(committed)) {
				try {
					({ setCookie } = await committed);
				} finally {
					// Other requests ran meanwhile: one may have added its cookie to a Response that is
					// returned for every request, which this one must then not send, nor add to.
					below = cookiesBelow(c);
				}
			} else ({ setCookie } = committed);
		} catch (error) {
			// app.onError answers instead.
			cancelWebBody(c.res);
			throw error;
		}
		if (setCookie === null) return;
		// A Response without a body may be one object returned for every request (a module-level
		// `new Response(null, { status: 204 })`), which a request that returned it earlier may still
		// be sending (behind a middleware that awaits after next()), and a route without sessions may
		// return: the cookie goes on a copy, cheap without a body. A body is read once, so a Response
		// with one is this request's own.
		if (hasNoBody(c.res)) replaceResponse(c, new Response(null, c.res));
		// A Set-Cookie the app put on the Node response (`c.env.outgoing`) under @hono/node-server:
		// node replaces it with the Response's Set-Cookie list, so it joins that list. Only when the
		// Response has no Set-Cookie of its own, which would have replaced it without sessionkit.
		const raw = below === undefined ? rawSetCookiesOf(c) : undefined;
		try {
			addCookieHeaders(c.res.headers, setCookie, raw);
		} catch (error) {
			// Headers of a fetch() response or of Response.redirect() are immutable: copy the response.
			if (!(error instanceof TypeError)) throw error;
			c.res = new Response(c.res.body, c.res);
			addCookieHeaders(c.res.headers, setCookie, raw);
		}
		const cookies = raw === undefined ? setCookie : `${raw.join("\n")}\n${setCookie}`;
		cookiesAdded.set(c.res, { cookies: below === undefined ? cookies : `${below}\n${cookies}`, request: requestOf(c) });
	};
}

/**
 * Responses the adapter added session cookies to, with those cookies (one per line). The cookie
 * goes on the handler's own Response when it has a body: a copy for every response that sets one
 * halved req/s on Hono's new-session route, and under @hono/node-server slowed every route by a
 * fifth. Such a Response is read once, so it is the request's own; if one comes back all the same
 * (its body was never read: a HEAD request's), the next user is answered with a copy without them.
 */
const cookiesAdded = new WeakMap<Response, AddedCookies>();

interface AddedCookies {
	/** One per line. */
	cookies: string;
	/**
	 * The request they were added for (see `requestOf`): found on `c.res` after `next()` in that
	 * request, they are a middleware's below (another manager's), and stay; found in another
	 * request, they are an earlier request's, and are taken off.
	 */
	request: object;
}

/**
 * The cookies that session middlewares below this one (another manager's: a sub-app's, a mounted
 * app's) added to `c.res` in this request, which stay. Cookies recorded for an earlier request
 * are taken off: `c.res` becomes a copy without them.
 */
function cookiesBelow(c: Context): string | undefined {
	const added = cookiesAdded.get(c.res);
	if (added === undefined) return undefined;
	if (added.request === requestOf(c)) return added.cookies;
	replaceWithoutAddedCookies(c, added.cookies);
	return undefined;
}

/**
 * The request, as the middlewares of every Hono app it passes through see it: the Node request
 * under @hono/node-server (an app mounted with `mount()` has a Context of its own), else the
 * Context (sub-apps added with `app.route` share it).
 */
function requestOf(c: Context): object {
	const incoming = (c.env as NodeBindings)?.incoming;
	return typeof incoming === "object" && incoming !== null ? incoming : c;
}

/** The Set-Cookie values of the Node response under @hono/node-server, when the Response has none. */
function rawSetCookiesOf(c: Context): string[] | undefined {
	const outgoing = (c.env as NodeBindings)?.outgoing;
	if (typeof outgoing?.getHeader !== "function") return undefined;
	const raw = outgoing.getHeader("set-cookie");
	if (raw === undefined || c.res.headers.has("Set-Cookie")) return undefined;
	return Array.isArray(raw) ? raw.map(String) : [String(raw)];
}

function replaceWithoutAddedCookies(c: Context, added: string): void {
	const copy = new Response(c.res.body, c.res);
	const stale = added.split("\n");
	const kept = copy.headers.getSetCookie().filter((cookie) => !stale.includes(cookie));
	copy.headers.delete("Set-Cookie");
	for (const cookie of kept) copy.headers.append("Set-Cookie", cookie);
	replaceResponse(c, copy);
}

/**
 * True when `res` has no body. Not read from @hono/node-server's lightweight Response with a
 * Content-Type (what c.text, c.json and c.html return there), taken to have one: reading `body`
 * turns it into a full Response, which cost a third of the req/s of a route that creates a
 * session. A bodyless Response made before the server starts is a native one, and is read; a
 * null-body status has none, Content-Type or not (`status` is cheap on the lightweight Response).
 */
function hasNoBody(res: Response): boolean {
	if (isNullBodyStatus(res.status)) return true;
	if (res.headers.has("Content-Type") && isLightweight(res)) return false;
	return res.body === null;
}

/** @hono/node-server's Response, a subclass of the native one (whose prototype is a plain object's child). */
function isLightweight(res: Response): boolean {
	return Object.getPrototypeOf(Object.getPrototypeOf(res)) !== Object.prototype;
}

/** 204, 205 and 304 never have a body. */
function isNullBodyStatus(status: number): boolean {
	return status === 204 || status === 304 || status === 205;
}

/** `c.res = copy`, for a copy of `c.res` with its headers. */
function replaceResponse(c: Context, copy: Response): void {
	// Hono's setter would copy the old response's headers, its Set-Cookie list included, over
	// the new one's: cleared first, there is nothing to copy.
	c.res = undefined as unknown as Response;
	c.res = copy;
}

/** The Node request and response under @hono/node-server (its `HttpBindings`). */
type NodeBindings = { incoming?: { headers?: { cookie?: unknown }; socket?: { encrypted?: unknown } }; outgoing?: { getHeader?: (name: string) => unknown; headersSent?: boolean } } | undefined;

/** True once the Node response has sent its head (under @hono/node-server; elsewhere unknown, so false). */
function headSent(c: Context): boolean {
	return (c.env as NodeBindings)?.outgoing?.headersSent === true;
}

/**
 * The request's `Cookie` header. Under @hono/node-server it is read from the Node request that
 * `c.env.incoming` holds (as its own `getConnInfo` reads the socket there): `c.req.header()`
 * validates and normalizes the name and value on every call, about 2k instructions a request,
 * 3% of an untouched route's. Node has joined repeated Cookie headers with "; " already.
 */
function cookieHeaderOf(c: Context): string | undefined {
	const headers = (c.env as NodeBindings)?.incoming?.headers;
	if (typeof headers !== "object" || headers === null) return c.req.header("Cookie");
	return typeof headers.cookie === "string" ? headers.cookie : undefined;
}

/** `Secure` for a Hono request: it came over TLS, or with `trustProxy` the proxy says so. */
function isSecureHono(c: Context, trustProxy: boolean): boolean {
	return cameOverTLS(c) || (trustProxy && forwardedHTTPS(c.req.header("X-Forwarded-Proto")));
}

/**
 * Under @hono/node-server, the socket's word: the URL's scheme there is the one a request line in
 * absolute form names (`GET https://…`, which any client may write), else the socket's. Elsewhere
 * the URL is the runtime's, the only word there is.
 */
function cameOverTLS(c: Context): boolean {
	const incoming = (c.env as NodeBindings)?.incoming;
	if (typeof incoming !== "object" || incoming === null) return c.req.url.startsWith("https:");
	return incoming.socket?.encrypted === true;
}

/** Adds the session cookie (after `raw`, the Node response's) and the headers that keep caches from storing it. */
function addCookieHeaders(headers: Headers, setCookie: string, raw: string[] | undefined): void {
	if (raw !== undefined) for (const cookie of raw) headers.append("Set-Cookie", cookie);
	headers.append("Set-Cookie", setCookie);
	headers.set("Cache-Control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
	headers.set("Vary", varyWithCookie(headers.get("Vary")));
}

/**
 * The request's session, or `SessionNotLoadedError` when `sessionMiddleware` did not run for
 * this route (it is missing, or registered for other paths).
 *
 * @example
 * app.get("/me", (c) => c.json({ userId: getSession<{ userId: number }>(c).get("userId") ?? null }));
 */
export function getSession<Data extends object = AppSessionData>(c: Context): Session<Data> {
	const session: Session<AppSessionData> | undefined = c.get("session");
	if (session === undefined) throw new SessionNotLoadedError("sessionMiddleware(sessions)");
	return session as Session<object> as Session<Data>;
}
