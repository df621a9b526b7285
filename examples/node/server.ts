/**
 * The demo on node:http. Run it with
 *   node --conditions=sessionkit-source --import tsx examples/node/server.ts
 * then open http://127.0.0.1:3000/counter (PORT changes the port).
 */
import { createServer } from "node:http";
import { createSessions } from "sessionkit";
import { createApp } from "./app.js";

const port = Number(process.env.PORT ?? 3000);
const sessions = createSessions(); // the memory store: fine for a demo, refused in production

const server = createServer(createApp(sessions, { trustProxy: process.env.TRUST_PROXY === "1" }));
server.listen(port, "127.0.0.1", () => console.log(`node:http demo on http://127.0.0.1:${port}`));

for (const signal of ["SIGINT", "SIGTERM"] as const) {
	process.once(signal, () => {
		server.close();
		server.closeAllConnections();
		void sessions.close();
	});
}
