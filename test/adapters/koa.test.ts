import assert from "node:assert/strict";
import { createServer } from "node:http";
import { it } from "node:test";
import Koa from "koa";
import { createSessions, SessionConfigError, SessionNotLoadedError, SessionUsageError } from "sessionkit";
import type { SessionManager } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/koa";
import { createApp } from "../../examples/koa/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { faultyStore } from "../helpers/test-stores.js";

adapterConformance("koa", async (sessions, { trustProxy }) =>
	listen(createServer(createApp(sessions, { trustProxy, logErrors: false }).callback())),
);

it("koa: getSession without the middleware throws SessionNotLoadedError", async (t) => {
	const app = new Koa();
	let thrown: unknown;
	app.use((ctx) => {
		try {
			getSession(ctx);
		} catch (error) {
			thrown = error;
		}
		ctx.body = "ok";
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => server.close());
	await (await fetch(server.url)).text();
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("koa: sessionMiddleware without a session manager fails at setup", () => {
	assert.throws(() => sessionMiddleware(undefined as unknown as SessionManager), SessionConfigError);
});

it("koa: reports through app.on(\"error\") a session cookie that came after the headers were sent", async (t) => {
	const sessions = createSessions();
	const app = new Koa();
	const reported = new Promise<unknown>((resolve) => app.on("error", resolve));
	app.use(sessionMiddleware(sessions));
	app.use((ctx) => {
		ctx.session.set("user_id", 123);
		ctx.respond = false;
		ctx.res.end("raw");
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const response = await fetch(server.url);
	assert.equal(await response.text(), "raw");
	assert.ok((await reported) instanceof SessionUsageError);
});

it("koa: cancels a web stream body that will never be sent when the store cannot save", async (t) => {
	const store = faultyStore();
	const sessions = createSessions({ store });
	const app = new Koa();
	app.on("error", () => {});
	app.use(sessionMiddleware(sessions));
	const cancelled: string[] = [];
	/** A body that never ends on its own, as an event stream or a proxied upstream body. */
	const endless = (name: string) => new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(8)), cancel: () => void cancelled.push(name) });
	app.use((ctx) => {
		ctx.session.set("user_id", 123);
		ctx.body = ctx.path === "/response" ? new Response(endless("response")) : endless("stream");
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	store.failing = "writes";
	for (const path of ["/stream", "/response"]) {
		const response = await fetch(server.url + path);
		assert.equal(response.status, 500);
		assert.equal(response.headers.getSetCookie().length, 0);
		await response.text();
	}
	assert.deepEqual(cancelled, ["stream", "response"], "each body that will never be sent is cancelled");
});
