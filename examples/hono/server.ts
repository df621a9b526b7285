/**
 * The demo on Hono 4, served on Node by @hono/node-server. Run it with
 *   node --conditions=sessionkit-source --import tsx examples/hono/server.ts
 * then open http://127.0.0.1:3000/counter (PORT changes the port).
 */
import { serve } from "@hono/node-server";
import { createSessions } from "sessionkit";
import { createApp } from "./app.js";

const port = Number(process.env.PORT ?? 3000);
const sessions = createSessions(); // the memory store: fine for a demo, refused in production

const app = createApp(sessions, { trustProxy: process.env.TRUST_PROXY === "1" });
const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port }, () => {
	console.log(`Hono demo on http://127.0.0.1:${port}`);
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
	process.once(signal, () => {
		server.close();
		void sessions.close();
	});
}
