/**
 * A loopback TCP proxy in front of a real server, for tests of a connection that drops at the
 * worst moment: after the server has run a request, before its answer reaches the client.
 */
import { connect, createServer, type Socket } from "node:net";

export interface TcpProxy {
	readonly port: number;
	/**
	 * The next time a client sends data containing `marker`: forwards it, waits for the server's
	 * answer, and closes both sides instead of passing the answer on. Resolves once it has cut.
	 * The marker must arrive within one chunk (fine for small requests).
	 */
	cutAfterRequest(marker: string): Promise<void>;
	/** Closes every connection and stops listening. */
	close(): Promise<void>;
}

/** Starts a proxy on a free loopback port that forwards each connection to `host:port`. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
	const sockets = new Set<Socket>();
	let armed: { marker: Buffer; cut: () => void } | undefined;

	const server = createServer((client) => {
		const upstream = connect(target);
		for (const socket of [client, upstream]) {
			sockets.add(socket);
			socket.on("close", () => sockets.delete(socket));
			socket.on("error", () => {}); // the other side's close follows
		}
		let cutting: (() => void) | undefined;
		client.on("data", (chunk: Buffer) => {
			if (armed !== undefined && chunk.includes(armed.marker)) {
				cutting = armed.cut;
				armed = undefined;
			}
			upstream.write(chunk);
		});
		upstream.on("data", (chunk: Buffer) => {
			if (cutting === undefined) {
				client.write(chunk);
				return;
			}
			client.destroy();
			upstream.destroy();
			cutting();
		});
		client.on("close", () => upstream.destroy());
		upstream.on("close", () => client.destroy());
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => resolve());
	});

	return {
		port: (server.address() as { port: number }).port,
		cutAfterRequest(marker) {
			return new Promise((resolve) => {
				armed = { marker: Buffer.from(marker), cut: resolve };
			});
		},
		close() {
			for (const socket of sockets) socket.destroy();
			return new Promise((resolve) => server.close(() => resolve()));
		},
	};
}
