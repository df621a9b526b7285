import assert from "node:assert/strict";
import { it } from "node:test";
import Fastify from "fastify";
import { SessionConfigError, SessionNotLoadedError } from "sessionkit";
import type { SessionManager } from "sessionkit";
import { getSession, sessionPlugin } from "sessionkit/fastify";
import { createApp } from "../../examples/fastify/app.js";
import { adapterConformance } from "../adapter-conformance.js";

adapterConformance("fastify", async (sessions, { trustProxy }) => {
	const app = await createApp(sessions, { trustProxy, logErrors: false });
	const url = await app.listen({ host: "127.0.0.1", port: 0 });
	return { url, close: () => app.close() };
});

it("fastify: getSession without the plugin throws SessionNotLoadedError", async (t) => {
	const app = Fastify();
	t.after(() => app.close());
	let thrown: unknown;
	app.get("/", async (request) => {
		try {
			getSession(request);
		} catch (error) {
			thrown = error;
		}
		return "ok";
	});
	await app.inject("/");
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("fastify: registering without a session manager fails at boot", async (t) => {
	const app = Fastify();
	t.after(() => app.close());
	await assert.rejects(async () => {
		await app.register(sessionPlugin, { sessions: undefined as unknown as SessionManager });
	}, SessionConfigError);
});
