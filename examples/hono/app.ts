/**
 * The demo routes on Hono 4 with sessionkit's `sessionMiddleware`. Web-standard code only:
 * `server.ts` runs it on Node with @hono/node-server, and the same `app.fetch` runs on Bun
 * (`Bun.serve({ fetch: app.fetch })`), Deno (`Deno.serve(app.fetch)`) and Workers.
 */
import { Hono } from "hono";
import { setCookie } from "hono/cookie";
import { stream } from "hono/streaming";
import { SessionError } from "sessionkit";
import type { AppSessionData, SessionManager } from "sessionkit";
import { sessionMiddleware } from "sessionkit/hono";

/** Options of {@link createApp}. */
export interface DemoOptions {
	/** Trust `X-Forwarded-Proto` from a reverse proxy. @default false */
	trustProxy?: boolean;
	/** Log errors that become 500 responses. @default true */
	logErrors?: boolean;
}

/**
 * The demo app: the session middleware for every route, then the routes.
 *
 * @example
 * serve({ fetch: createApp(createSessions()).fetch, port: 3000 });
 */
export function createApp(sessions: SessionManager<AppSessionData>, options: DemoOptions = {}): Hono {
	const logErrors = options.logErrors ?? true;
	const app = new Hono();
	app.use(sessionMiddleware(sessions, { trustProxy: options.trustProxy ?? false }));

	// Store errors (SessionStoreError) and handler errors both end here.
	app.onError((error, c) => {
		if (logErrors) console.error(error);
		return c.text(`Error: ${error instanceof SessionError ? error.code : "INTERNAL"}`, 500);
	});

	app.get("/login", (c) => {
		const session = c.get("session");
		session.set("authenticated", true);
		session.renew(); // a new token at every privilege change: no session fixation
		return c.text("Logged in");
	});
	app.get("/logout", (c) => {
		c.get("session").destroy();
		return c.text("Logged out");
	});
	app.get("/secret", (c) => (c.get("session").get("authenticated") === true ? c.text("The cake is a lie!") : c.text("Forbidden", 403)));
	app.get("/set", (c) => {
		c.get("session").set("user_id", 123);
		return c.text("Succeed");
	});
	app.get("/get", (c) => {
		const userId = c.get("session").get("user_id");
		return c.text(userId === undefined ? "Not authenticated" : `Authenticated as ${String(userId)}`);
	});
	app.get("/clear", (c) => {
		c.get("session").clear();
		return c.text("Cleared");
	});
	app.get("/flash/set", (c) => {
		c.get("session").flash("message", "This is a flash message");
		return c.text("Succeed");
	});
	app.get("/flash/get", (c) => c.text(c.get("session").flash<string>("message") ?? "No flash message"));
	app.get("/counter", (c) => c.text(`Visits: ${c.get("session").increment("visits")}`));
	app.get("/theme", (c) => {
		setCookie(c, "theme", "dark", { path: "/", sameSite: "Lax" });
		c.header("Vary", "Accept-Language");
		c.get("session").set("theme", "dark");
		return c.text("Theme: dark");
	});
	app.get("/throw", (c) => {
		c.get("session").set("user_id", 666);
		throw new Error("boom");
	});
	app.get("/stream", (c) => {
		// Change the session before returning the response: the stream callback runs after the commit.
		c.get("session").set("user_id", 123);
		c.header("Content-Type", "text/plain; charset=utf-8");
		return stream(c, async (body) => {
			for (const chunk of ["Streaming ", "the ", "body"]) {
				await body.write(chunk);
				await body.sleep(5);
			}
		});
	});
	return app;
}
