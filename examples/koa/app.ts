/**
 * The demo routes on Koa 3 with sessionkit's `sessionMiddleware`. `server.ts` runs it; the
 * adapter tests run the same app through the conformance suite.
 */
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import Koa from "koa";
import type { Context } from "koa";
import { SessionError } from "sessionkit";
import type { AppSessionData, SessionManager } from "sessionkit";
import { sessionMiddleware } from "sessionkit/koa";

/** Options of {@link createApp}. */
export interface DemoOptions {
	/** Trust `X-Forwarded-Proto` from a reverse proxy (Koa's `app.proxy`). @default false */
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

const routes: Record<string, (ctx: Context) => void> = {
	"/login"(ctx) {
		ctx.session.set("authenticated", true);
		ctx.session.renew(); // a new token at every privilege change: no session fixation
		ctx.body = "Logged in";
	},
	"/logout"(ctx) {
		ctx.session.destroy();
		ctx.body = "Logged out";
	},
	"/secret"(ctx) {
		if (ctx.session.get("authenticated") === true) ctx.body = "The cake is a lie!";
		else ctx.throw(403, "Forbidden");
	},
	"/set"(ctx) {
		ctx.session.set("user_id", 123);
		ctx.body = "Succeed";
	},
	"/get"(ctx) {
		const userId = ctx.session.get("user_id");
		ctx.body = userId === undefined ? "Not authenticated" : `Authenticated as ${String(userId)}`;
	},
	"/clear"(ctx) {
		ctx.session.clear();
		ctx.body = "Cleared";
	},
	"/flash/set"(ctx) {
		ctx.session.flash("message", "This is a flash message");
		ctx.body = "Succeed";
	},
	"/flash/get"(ctx) {
		ctx.body = ctx.session.flash<string>("message") ?? "No flash message";
	},
	"/counter"(ctx) {
		ctx.body = `Visits: ${ctx.session.increment("visits")}`;
	},
	"/theme"(ctx) {
		ctx.cookies.set("theme", "dark", { httpOnly: false, sameSite: "lax" });
		ctx.vary("Accept-Language");
		ctx.session.set("theme", "dark");
		ctx.body = "Theme: dark";
	},
	"/throw"(ctx) {
		ctx.session.set("user_id", 666);
		throw new Error("boom");
	},
	"/stream"(ctx) {
		ctx.session.set("user_id", 123);
		ctx.type = "text/plain; charset=utf-8";
		ctx.body = Readable.from(streamedBody());
	},
};

/**
 * The demo app: error handling first, then the session middleware, then the routes.
 *
 * @example
 * createApp(createSessions()).listen(3000);
 */
export function createApp(sessions: SessionManager<AppSessionData>, options: DemoOptions = {}): Koa {
	const logErrors = options.logErrors ?? true;
	const app = new Koa();
	app.proxy = options.trustProxy ?? false;

	// Above sessionMiddleware, so that store errors (SessionStoreError) reach it too.
	app.use(async (ctx, next) => {
		try {
			await next();
		} catch (error) {
			const status = (error as { status?: unknown }).status;
			if (typeof status === "number" && status < 500) {
				ctx.status = status;
				ctx.body = (error as Error).message;
				return;
			}
			if (logErrors) console.error(error);
			ctx.status = 500;
			ctx.type = "text/plain; charset=utf-8";
			ctx.body = `Error: ${error instanceof SessionError ? error.code : "INTERNAL"}`;
		}
	});
	app.use(sessionMiddleware(sessions));
	app.use((ctx) => {
		const route = ctx.method === "GET" ? routes[ctx.path] : undefined;
		if (route) route(ctx);
	});
	return app;
}
