import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { fastifyPlugin } from "fastify-plugin";
import type { AppSessionData, CommitResult, Session, SessionManager } from "../index.js";
import { SESSION_RESPONSE_HEADERS, SessionNotLoadedError, SessionUsageError } from "../index.js";
import { assertManager, cancelWebBody, closeUncommitted, holdErrors, isPromiseLike, isResponse, varyWithCookie } from "./internal/common.js";
import { answerServerError, commitFor, hookBeforeHeaders } from "./internal/node-response.js";

declare module "fastify" {
	interface FastifyRequest {
		/** The request's session, loaded by `sessionPlugin` in its `onRequest` hook. */
		session: Session<AppSessionData>;
	}
}

/** Options of {@link sessionPlugin}. */
export interface SessionPluginOptions {
	/** The manager made by `createSessions`. */
	sessions: SessionManager<AppSessionData>;
}

/** Set on a request whose session went through `commit` already (an error reply runs `onSend` again). */
const COMMITTED = Symbol("sessionkit.committed");

/** The instance decorator that holds the plugin's manager, for `hijackReply`. */
const MANAGER = Symbol("sessionkit.manager");

type CommittableRequest = FastifyRequest & { [COMMITTED]?: boolean };

/**
 * Fastify 5 plugin: sets `request.session` in an `onRequest` hook and commits it in `onSend`,
 * before the reply goes out, whatever the payload (a string, a Buffer, a stream, an error
 * reply). Registered through `fastify-plugin`, so it covers every route of the instance it is
 * registered on, including the 404 handler.
 *
 * Store errors are thrown from the hooks and so reach Fastify's error handler
 * (`setErrorHandler`), which answers them with a 500. `Secure` follows `request.protocol`,
 * so it honours Fastify's `trustProxy` option.
 *
 * A handler that fails (its error goes to the error handler) has its changes dropped, whatever
 * status the error handler answers with; changes the error handler makes are committed. Nothing
 * is committed for a server error (status 500 or above, that of a returned `Response` too), and a
 * change after it (in an `onResponse` hook) throws `SessionUsageError`, as one after a commit does. A
 * reply hijacked with `reply.hijack()` skips `onSend`, and so is never committed: hijack it with
 * {@link hijackReply} instead. In `onRequest` hooks added before the plugin, `request.session`
 * is still `null`.
 *
 * Register it once for a route: on the instance that serves it, or on a parent instance.
 * Registered again for the same routes (on the same instance, or in a child plugin), it throws a
 * `SessionUsageError` at boot. Sibling plugins, each registering it with its own manager (say,
 * another cookie name under `/admin`), keep separate sessions.
 *
 * The commit runs in the plugin's `onSend` hook, so `onSend` hooks added before the plugin run
 * first: if one fails, the reply becomes an error reply and nothing is committed for a server
 * error. One added after the plugin runs once the commit is done: if it fails, the store keeps
 * what was committed (that cannot be undone), and the error reply, even a 500, keeps the
 * session's `Set-Cookie`, `Cache-Control` and `Vary`, so the browser's cookie matches the store
 * (a `renew()` has already retired the old token: without the new cookie the user would be
 * logged out). The session is closed by then, so an error handler that changes it throws a
 * `SessionUsageError`. Add `onSend` hooks that may fail before the plugin.
 *
 * @example
 * const app = Fastify();
 * await app.register(sessionPlugin, { sessions: createSessions({ store }) });
 * app.get("/", async (request) => `visits: ${request.session.increment("visits")}`);
 */
export const sessionPlugin: FastifyPluginAsync<SessionPluginOptions> = fastifyPlugin(plugin, { fastify: "5.x", name: "sessionkit" });

async function plugin(fastify: FastifyInstance, options: SessionPluginOptions): Promise<void> {
	const sessions = options.sessions;
	assertManager(sessions, "sessionPlugin");
	assertFirstOnPath(fastify);

	fastify.decorate(MANAGER, sessions);
	// Fastify 5 refuses reference values as decorators; each request gets its own in onRequest.
	fastify.decorateRequest("session", null, []);
	// Declared up front, so that setting it keeps Fastify's request objects on one hidden class.
	fastify.decorateRequest(COMMITTED, false);

	// Callback-style hooks: with a synchronous store (memory) a request never waits for a microtask.
	// The load failed: the error handler finds a session that throws the store's error when used,
	// and onSend does not commit it.
	const failed = (request: CommittableRequest, done: (error: Error) => void, error: unknown) => {
		request.session = sessions.unavailable(error);
		request[COMMITTED] = true;
		done(error as Error);
	};

	fastify.addHook("onRequest", (request: CommittableRequest, _reply, done) => {
		let loaded: Session<AppSessionData> | Promise<Session<AppSessionData>>;
		try {
			loaded = sessions.load(request.headers.cookie);
		} catch (error) {
			failed(request, done, error);
			return;
		}
		if (!isPromiseLike(loaded)) {
			request.session = loaded;
			done();
			return;
		}
		loaded.then(
			(session) => {
				request.session = session;
				done();
			},
			(error: unknown) => failed(request, done, error),
		);
	});

	// Runs before the error handler: the failed handler's changes are dropped, whatever status the
	// error handler answers with; the error handler's own (a destroy(), say) are committed.
	fastify.addHook("onError", (request, _reply, _error, done) => {
		const session = request.session as Session<AppSessionData> | null;
		if (session !== null) sessions.discard(session);
		done();
	});

	fastify.addHook("onSend", (request: CommittableRequest, reply, payload, done) => {
		const session = request.session as Session<AppSessionData> | null;
		// A returned Response gives the reply its status only after onSend.
		const status = isResponse(payload) ? payload.status : reply.statusCode;
		if (session === null || request[COMMITTED]) {
			done(null, payload);
			return;
		}
		if (status >= 500) {
			// Never committed: a change after this (in onResponse) throws, as one after a commit does.
			request[COMMITTED] = true;
			closeUncommitted(session);
			done(null, payload);
			return;
		}
		request[COMMITTED] = true;
		const fail = (error: unknown) => {
			// The error handler sends its own payload: release the one that will never be sent.
			discard(payload);
			done(error as Error);
		};
		let result: CommitResult | Promise<CommitResult>;
		try {
			result = sessions.commit(session, { secure: request.protocol === "https" });
		} catch (error) {
			fail(error);
			return;
		}
		const finish = ({ setCookie }: CommitResult) => {
			if (setCookie === null) {
				done(null, payload);
				return;
			}
			addCookieHeaders(reply, setCookie);
			done(null, isResponse(payload) ? withSessionHeaders(payload) : payload);
		};
		if (!isPromiseLike(result)) {
			finish(result);
			return;
		}
		// Fastify pipes the payload only once onSend is done.
		const release = holdErrors(payload);
		result.then((settled) => {
			release();
			// As Fastify does for its own async hooks: a reply it refuses once onSend is done (a header
			// Node rejects, a used Response body) goes to the error handler, not an unhandled rejection.
			try {
				finish(settled);
			} catch (error) {
				done(error as Error);
			}
		}, fail);
	});
}

/**
 * Throws `SessionUsageError` at boot when `request.session` is decorated already on this instance
 * or a parent: a second plugin there would load and commit a second session for the same
 * requests, with one `request.session` to hold both. Sibling plugins (each in its own
 * encapsulated context) do not see each other's decorator, and each keeps its own sessions.
 */
function assertFirstOnPath(fastify: FastifyInstance): void {
	if (fastify.hasRequestDecorator(COMMITTED)) {
		throw new SessionUsageError(
			"sessionPlugin is registered twice for the same routes (on this instance, or on it and a parent instance). Register it once, on the instance whose routes use the session; for separate sessions, register it in sibling plugins, each with its own manager.",
		);
	}
	if (fastify.hasRequestDecorator("session")) {
		throw new SessionUsageError("request.session is decorated already by another plugin (such as @fastify/session or @fastify/secure-session) on this instance or a parent instance; sessionPlugin cannot share it.");
	}
}

/**
 * `reply.header("set-cookie", …)` appends in Fastify, so cookies the handler set are kept. Those
 * set on the raw response (a connect-style middleware under @fastify/middie or @fastify/express,
 * `reply.raw.setHeader`) would be replaced by the reply's own when Fastify writes the head: they
 * move onto the reply first, as @fastify/cookie does with them.
 */
function addCookieHeaders(reply: FastifyReply, setCookie: string): void {
	const raw = reply.raw.getHeader("set-cookie");
	if (raw !== undefined) {
		reply.raw.removeHeader("set-cookie");
		reply.header("set-cookie", typeof raw === "number" ? String(raw) : raw);
	}
	reply.header("set-cookie", setCookie);
	reply.header("cache-control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
	const vary = reply.getHeader("vary");
	reply.header("vary", varyWithCookie(Array.isArray(vary) ? vary.join(", ") : vary === undefined ? undefined : String(vary)));
}

/**
 * A returned `Response` with the session's `Cache-Control` and `Vary` in place of its own:
 * Fastify applies its status and headers to the reply after `onSend`, replacing the reply's.
 * On a copy, as its headers may be immutable.
 */
function withSessionHeaders(response: Response): Response {
	const headers = response.headers;
	// A used body is Fastify's error to report (FST_ERR_REP_RESPONSE_BODY_CONSUMED); it cannot be copied.
	if ((!headers.has("cache-control") && !headers.has("vary")) || response.bodyUsed) return response;
	let copy: Response;
	try {
		copy = new Response(response.body, response);
	} catch {
		// A locked body, or a status Response refuses: Fastify reports the Response as it is.
		return response;
	}
	if (headers.has("cache-control")) copy.headers.set("cache-control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
	if (headers.has("vary")) copy.headers.set("vary", varyWithCookie(headers.get("vary")));
	return copy;
}

/** Releases a payload that will never be sent: a Node stream is destroyed, a web body cancelled. */
function discard(payload: unknown): void {
	const stream = payload as { destroy?: () => void } | null;
	if (typeof stream?.destroy === "function") stream.destroy();
	else cancelWebBody(payload);
}

/**
 * `request.session`, or `SessionNotLoadedError` when `sessionPlugin` is not registered on the
 * instance (or a parent instance) that serves this route.
 *
 * @example
 * app.get("/me", async (request) => getSession<{ userId: number }>(request).get("userId") ?? null);
 */
export function getSession<Data extends object = AppSessionData>(request: FastifyRequest): Session<Data> {
	const session = (request as { session?: unknown }).session;
	if (session === undefined || session === null) throw new SessionNotLoadedError("sessionPlugin (app.register(sessionPlugin, { sessions }))");
	return session as Session<Data>;
}

/**
 * Takes the reply over as `reply.hijack()` does (you write to `reply.raw`), and commits the
 * session before `reply.raw` sends its head, which `reply.hijack()` alone never does. A change to
 * the session after the head went out throws a `SessionUsageError`. A commit that fails is
 * logged with `request.log` and answered with a plain 500 (nothing of the handler's is sent then),
 * or, once the body has begun, by cutting the response off.
 *
 * @example
 * app.get("/events", async (request, reply) => {
 *   request.session.set("seen", Date.now());
 *   hijackReply(request, reply);
 *   reply.raw.writeHead(200, { "content-type": "text/event-stream" });
 * });
 */
export function hijackReply(request: FastifyRequest, reply: FastifyReply): void {
	const session = getSession(request);
	const committable = request as CommittableRequest;
	reply.hijack();
	// The load failed, or the reply was committed already: there is nothing to commit.
	if (committable[COMMITTED]) return;
	committable[COMMITTED] = true;
	const sessions = (request.server as unknown as { [MANAGER]: SessionManager<AppSessionData> })[MANAGER];
	const secure = { secure: request.protocol === "https" };
	hookBeforeHeaders(
		reply.raw,
		(statusCode) => commitFor(reply.raw, sessions, session as Session<AppSessionData>, secure, statusCode),
		(error) => answerFailedCommit(request, reply, error),
	);
}

/** A hijacked reply's failed commit: Fastify's error handler cannot answer it any more. */
function answerFailedCommit(request: FastifyRequest, reply: FastifyReply, error: unknown): void {
	request.log.error({ err: error }, "sessionkit: the session of a hijacked reply could not be committed");
	answerServerError(reply.raw);
}
