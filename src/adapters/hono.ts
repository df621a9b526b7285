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
 * `X-Forwarded-Proto: https`. A response that gets the cookie is copied first, so the handler may
 * return one `Response` object for every request, or one with immutable headers (returned by
 * `fetch`, or `Response.redirect`): the adapter never changes the object it returned.
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
		const loaded = sessions.load(cookieHeaderOf(c));
		const session = isPromiseLike(loaded) ? await loaded : loaded;
		c.set("session", session as Session<object> as Session<AppSessionData>);
		await next();
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
		// On a copy: the handler may return one Response for every request (a module-level
		// `new Response(null, { status: 204 })`), which would carry this cookie to the next user;
		// and the headers of a fetch() response or of Response.redirect() are immutable. Copied
		// before the headers are added: Hono's setter copies the old response's headers over.
		c.res = new Response(c.res.body, c.res);
		addCookieHeaders(c.res.headers, setCookie);
	};
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
