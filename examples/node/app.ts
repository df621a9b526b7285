/**
 * The demo routes on plain node:http with sessionkit's `withSessions`. `server.ts` runs it;
 * the adapter tests run the same app through the conformance suite.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { SessionError } from "sessionkit";
import type { AppSessionData, SessionManager } from "sessionkit";
import { getSession, withSessions } from "sessionkit/node";

/** Options of {@link createApp}. */
export interface DemoOptions {
	/** Trust `X-Forwarded-Proto` from a reverse proxy. @default false */
	trustProxy?: boolean;
	/** Log errors that become 500 responses. @default true */
	logErrors?: boolean;
}

async function* streamedBody(): AsyncGenerator<string> {
	for (const chunk of ["Streaming ", "the ", "body"]) {
		yield chunk;
		await sleep(5);
	}
}

function send(res: ServerResponse, status: number, body: string): void {
	res.statusCode = status;
	res.setHeader("Content-Type", "text/plain; charset=utf-8");
	res.end(body);
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
	const session = getSession(req);
	const path = new URL(req.url ?? "/", "http://localhost").pathname;
	switch (path) {
		case "/login":
			session.set("authenticated", true);
			session.renew(); // a new token at every privilege change: no session fixation
			return send(res, 200, "Logged in");
		case "/logout":
			session.destroy();
			return send(res, 200, "Logged out");
		case "/secret":
			return session.get("authenticated") === true ? send(res, 200, "The cake is a lie!") : send(res, 403, "Forbidden");
		case "/set":
			session.set("user_id", 123);
			return send(res, 200, "Succeed");
		case "/get": {
			const userId = session.get("user_id");
			return send(res, 200, userId === undefined ? "Not authenticated" : `Authenticated as ${String(userId)}`);
		}
		case "/clear":
			session.clear();
			return send(res, 200, "Cleared");
		case "/flash/set":
			session.flash("message", "This is a flash message");
			return send(res, 200, "Succeed");
		case "/flash/get":
			return send(res, 200, session.flash<string>("message") ?? "No flash message");
		case "/counter":
			return send(res, 200, `Visits: ${session.increment("visits")}`);
		case "/theme":
			res.setHeader("Set-Cookie", "theme=dark; Path=/; SameSite=Lax");
			res.setHeader("Vary", "Accept-Language");
			session.set("theme", "dark");
			return send(res, 200, "Theme: dark");
		case "/throw":
			session.set("user_id", 666);
			throw new Error("boom");
		case "/stream":
			session.set("user_id", 123);
			res.setHeader("Content-Type", "text/plain; charset=utf-8");
			Readable.from(streamedBody()).pipe(res);
			return;
		default:
			return send(res, 404, "Not Found");
	}
}

/**
 * The demo app as a node:http request listener: `http.createServer(createApp(sessions))`.
 *
 * @example
 * http.createServer(createApp(createSessions())).listen(3000);
 */
export function createApp(
	sessions: SessionManager<AppSessionData>,
	options: DemoOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void | Promise<void> {
	const logErrors = options.logErrors ?? true;
	return withSessions(sessions, route, {
		trustProxy: options.trustProxy ?? false,
		// Store errors (SessionStoreError) and handler errors both end here.
		onError(error, _req, res) {
			if (logErrors) console.error(error);
			if (res.headersSent) {
				res.destroy();
				return;
			}
			send(res, 500, `Error: ${error instanceof SessionError ? error.code : "INTERNAL"}`);
		},
	});
}
