/**
 * The Hono adapter. Web-standard APIs only (Request, Response, Headers): it runs wherever Hono
 * runs, Node (through @hono/node-server), Bun, Deno and Workers alike.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppSessionData, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError } from "../index.js";
import { assertManager, cancelWebBody, CommitRequest, forwardedHTTPS, isPromiseLike, varyWithCookie } from "./internal/common.js";

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
 * `Secure` is set when the request URL is `https:`, or with `trustProxy` when the proxy says
 * `X-Forwarded-Proto: https`. A response with immutable headers (one returned by `fetch`, or
 * `Response.redirect`) is copied so that the cookie can be added. A `Response` object the
 * handler returns again (one for every request) never carries an earlier request's cookie: it is
 * answered with a copy without it. The object itself keeps the cookie, so do not return it from
 * routes this middleware does not cover.
 *
 * Changes are committed unless the response is a server error (status 500 or above). A
 * handler that throws is answered by `app.onError` before this middleware resumes, and Hono
 * offers no hook in between, so its changes cannot be told from those `onError` makes: when
 * `onError` answers below 500, both are committed (a `destroy()` answered with a 401 ends the
 * session), as on Express; answered with a server error, neither is. A streamed body is fine as
 * long as the session is changed before the handler returns the response; a change inside the
 * stream callback comes after the commit, and throws `SessionUsageError`.
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
		let session: Session<Data>;
		try {
			const loaded = sessions.load(cookieHeaderOf(c));
			session = isPromiseLike(loaded) ? await loaded : loaded;
		} catch (error) {
			// app.onError finds a session that throws the store's error when used.
			c.set("session", sessions.unavailable(error) as Session<object> as Session<AppSessionData>);
			throw error;
		}
		c.set("session", session as Session<object> as Session<AppSessionData>);
		await next();
		if (cookiesAdded.has(c.res)) replaceWithoutAddedCookies(c);
		// Also after onError (c.error is set): what it changes, a destroy() say, must be committed.
		if (c.res.status >= 500) return;
		let setCookie: string | null;
		try {
			const committed = sessions.commit(session, new CommitRequest(c, trustProxy, isSecureHono));
			({ setCookie } = isPromiseLike(committed) ? await committed : committed);
		} catch (error) {
			// app.onError answers instead.
			cancelWebBody(c.res);
			throw error;
		}
		if (setCookie === null) return;
		try {
			addCookieHeaders(c.res.headers, setCookie);
		} catch (error) {
			// Headers of a fetch() response or of Response.redirect() are immutable: copy the response.
			if (!(error instanceof TypeError)) throw error;
			c.res = new Response(c.res.body, c.res);
			addCookieHeaders(c.res.headers, setCookie);
		}
		cookiesAdded.set(c.res, setCookie);
	};
}

/**
 * Responses the adapter added a session cookie to, with that cookie. The cookie goes on the
 * handler's own Response: a copy for every response that sets one halved req/s on Hono's
 * new-session route, and under @hono/node-server slowed every route by a fifth. A handler may
 * return one Response object for every request, though (a module-level `new Response(null,
 * { status: 204 })`): when it comes back, the next user is answered with a copy without it.
 */
const cookiesAdded = new WeakMap<Response, string>();

function replaceWithoutAddedCookies(c: Context): void {
	const added = cookiesAdded.get(c.res);
	const copy = new Response(c.res.body, c.res);
	const kept = copy.headers.getSetCookie().filter((cookie) => cookie !== added);
	copy.headers.delete("Set-Cookie");
	for (const cookie of kept) copy.headers.append("Set-Cookie", cookie);
	// Hono's setter would copy the old response's headers, its Set-Cookie list included, over
	// the new one's: cleared first, there is nothing to copy.
	c.res = undefined as unknown as Response;
	c.res = copy;
}

/** The Node request's own `Cookie` header under @hono/node-server (its `HttpBindings`). */
type NodeBindings = { incoming?: { headers?: { cookie?: unknown } } } | undefined;

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

/** `Secure` for a Hono request: an `https:` URL, or with `trustProxy` the proxy's word. */
function isSecureHono(c: Context, trustProxy: boolean): boolean {
	const req = c.req;
	return req.url.startsWith("https:") || (trustProxy && forwardedHTTPS(req.header("X-Forwarded-Proto")));
}

function addCookieHeaders(headers: Headers, setCookie: string): void {
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
