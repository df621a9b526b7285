/**
 * Throwaway server processes (redis-server, memcached) for fault tests: start one on a free
 * port, stop it, start it again on the same port. Real servers, never mocks.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { sleep } from "./keys.js";

/** True if `command` can be run (it is installed and on PATH). */
export function hasCommand(command: string): boolean {
	return spawnSync("sh", ["-c", `command -v ${command}`]).status === 0;
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const { port } = server.address() as { port: number };
			server.close(() => resolve(port));
		});
	});
}

function answers(port: number): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = connect({ host: "127.0.0.1", port });
		socket.once("connect", () => (socket.destroy(), resolve(true)));
		socket.once("error", () => resolve(false));
	});
}

export interface ChildServer {
	readonly port: number;
	/** Freezes the process (SIGSTOP) and resolves once it is stopped: connections stay open, nothing answers. */
	pause(): Promise<void>;
	/** Lets a paused process run again (SIGCONT). */
	resume(): void;
	/** Stops the process and resolves once it has exited. */
	stop(): Promise<void>;
}

/** Starts `command args` in the foreground and resolves once it accepts connections on `port`. */
export async function startChildServer(command: string, args: string[], port: number): Promise<ChildServer> {
	const child: ChildProcess = spawn(command, args, { stdio: "ignore" });
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const deadline = Date.now() + 5000;
	while (!(await answers(port))) {
		if (child.exitCode !== null || Date.now() > deadline) {
			child.kill("SIGKILL");
			throw new Error(`${command} did not start on port ${port}`);
		}
		await sleep(50);
	}
	return {
		port,
		async pause() {
			child.kill("SIGSTOP");
			// The stop is asynchronous; on Linux, wait until the process state says so.
			const stat = `/proc/${child.pid}/stat`;
			if (!existsSync(stat)) return sleep(100);
			for (let i = 0; i < 100 && readFileSync(stat, "utf8").split(" ")[2] !== "T"; i++) await sleep(10);
		},
		resume: () => void child.kill("SIGCONT"),
		async stop() {
			if (child.exitCode === null) child.kill("SIGCONT") && child.kill("SIGTERM");
			await exited;
		},
	};
}

/** Resolves with `attempt()`'s result once it stops rejecting, or rejects with its last error after `ms`. */
export async function eventually<T>(attempt: () => Promise<T>, ms: number): Promise<T> {
	const deadline = Date.now() + ms;
	for (;;) {
		try {
			return await attempt();
		} catch (error) {
			if (Date.now() > deadline) throw error;
			await sleep(100);
		}
	}
}
