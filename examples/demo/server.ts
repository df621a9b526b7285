/**
 * `npm start`: the Express demo on http://127.0.0.1:$PORT (default 3000; 0 picks a free port),
 * with the store SESSION_STORE names (see stores.ts; SQLite in data/sessions.db by default, so
 * sessions survive a restart).
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createSessions, SessionConfigError } from "sessionkit";
import { createDemoApp } from "./app.js";
import type { DemoData } from "./app.js";
import { DemoConfigError, openStore } from "./stores.js";

function portOf(value: string | undefined): number {
	const port = Number(value || 3000);
	if (!Number.isInteger(port) || port < 0 || port > 65535) throw new DemoConfigError(`PORT must be a whole number from 0 to 65535, got ${JSON.stringify(value)}.`);
	return port;
}

async function main(): Promise<void> {
	const port = portOf(process.env.PORT);
	const { name, store } = await openStore();
	const sessions = createSessions<DemoData>({ store });
	const server = createServer(createDemoApp(sessions));
	server.listen(port, "127.0.0.1");
	await once(server, "listening");
	const { port: actual } = server.address() as AddressInfo;
	console.log(`sessionkit demo on http://127.0.0.1:${actual} (store: ${name})`);

	let stopping = false;
	async function stop(): Promise<void> {
		if (stopping) return;
		stopping = true;
		const closed = once(server, "close");
		server.close();
		server.closeAllConnections();
		await closed;
		await sessions.close();
		process.exit(0);
	}
	// once: a second Ctrl-C gets Node's default, an immediate exit.
	for (const signal of ["SIGINT", "SIGTERM"] as const) {
		process.once(signal, () => {
			stop().catch((error: unknown) => {
				console.error(error);
				process.exit(1);
			});
		});
	}
}

main().catch((error: unknown) => {
	// A configuration mistake needs its message, not a stack trace.
	console.error(error instanceof SessionConfigError || error instanceof DemoConfigError ? `Error: ${error.message}` : error);
	process.exit(1);
});
