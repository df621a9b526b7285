/**
 * The demo routes on Fastify 5 with sessionkit's `sessionPlugin`. `server.ts` runs it; the
 * adapter tests run the same app through the conformance suite.
 */
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import Fastify from "fastify";
import type { FastifyInstance } from "fastify";
import { SessionError } from "sessionkit";
import type { AppSessionData, SessionManager } from "sessionkit";
import { sessionPlugin } from "sessionkit/fastify";

/** Options of {@link createApp}. */
export interface DemoOptions {
	/** Trust `X-Forwarded-Proto` from a reverse proxy (Fastify's `trustProxy`). @default false */
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

/**
 * The demo app: a Fastify instance with the session plugin and the demo routes, not listening yet.
 *
 * @example
 * const app = await createApp(createSessions());
 * await app.listen({ port: 3000 });
 */
export async function createApp(sessions: SessionManager<AppSessionData>, options: DemoOptions = {}): Promise<FastifyInstance> {
	const logErrors = options.logErrors ?? true;
	const app = Fastify({ trustProxy: options.trustProxy ?? false });
	await app.register(sessionPlugin, { sessions });

	// Store errors (SessionStoreError) and handler errors both end here.
	app.setErrorHandler(async (error, _request, reply) => {
		if (logErrors) console.error(error);
		return reply
			.code(500)
			.type("text/plain; charset=utf-8")
			.send(`Error: ${error instanceof SessionError ? error.code : "INTERNAL"}`);
	});

	app.get("/login", async (request) => {
		request.session.set("authenticated", true);
		request.session.renew(); // a new token at every privilege change: no session fixation
		return "Logged in";
	});
	app.get("/logout", async (request) => {
		request.session.destroy();
		return "Logged out";
	});
	app.get("/secret", async (request, reply) => {
		if (request.session.get("authenticated") !== true) return reply.code(403).send("Forbidden");
		return "The cake is a lie!";
	});
	app.get("/set", async (request) => {
		request.session.set("user_id", 123);
		return "Succeed";
	});
	app.get("/get", async (request) => {
		const userId = request.session.get("user_id");
		return userId === undefined ? "Not authenticated" : `Authenticated as ${String(userId)}`;
	});
	app.get("/clear", async (request) => {
		request.session.clear();
		return "Cleared";
	});
	app.get("/flash/set", async (request) => {
		request.session.flash("message", "This is a flash message");
		return "Succeed";
	});
	app.get("/flash/get", async (request) => request.session.flash<string>("message") ?? "No flash message");
	app.get("/counter", async (request) => `Visits: ${request.session.increment("visits")}`);
	app.get("/theme", async (request, reply) => {
		reply.header("set-cookie", "theme=dark; Path=/; SameSite=Lax").header("vary", "Accept-Language");
		request.session.set("theme", "dark");
		return "Theme: dark";
	});
	app.get("/throw", async (request) => {
		request.session.set("user_id", 666);
		throw new Error("boom");
	});
	app.get("/stream", async (request, reply) => {
		request.session.set("user_id", 123);
		return reply.type("text/plain; charset=utf-8").send(Readable.from(streamedBody()));
	});
	return app;
}
