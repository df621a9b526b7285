/**
 * Child processes of the bench: each server in its own process group (so the whole group can
 * be killed, even on failure), pinned to a core with `taskset` where the machine allows it.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";

const live = new Set<ChildProcess>();

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
	if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
	try {
		process.kill(-child.pid, signal);
	} catch {
		try {
			child.kill(signal);
		} catch {}
	}
}

/** Kills every process the bench started and still runs. Safe to call from `exit` handlers. */
export function killAll(): void {
	for (const child of live) killGroup(child, "SIGKILL");
	live.clear();
}

let handlersInstalled = false;
function installHandlers(): void {
	if (handlersInstalled) return;
	handlersInstalled = true;
	process.on("exit", killAll);
	for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
		process.on(signal, () => {
			killAll();
			process.exit(130);
		});
	}
}

export const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0 && availableParallelism() >= 2;

/** The argv prefix that pins a command to `core` (none on a machine without taskset or with one core). */
export function pinned(core: number, command: string, args: string[]): [string, string[]] {
	return hasTaskset ? ["taskset", ["-c", String(core), command, ...args]] : [command, args];
}

export function commandExists(command: string): boolean {
	return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

export interface Started {
	child: ChildProcess;
	/** The first stdout line for which `ready` was true. */
	line: string;
	output: () => string;
	stop: () => Promise<void>;
	/**
	 * Writes `line` to the process's stdin (started with `stdin: true`) and resolves with the
	 * rest of the next stdout line that starts with `replyPrefix`.
	 */
	ask: (line: string, replyPrefix: string) => Promise<string>;
}

/**
 * Starts a long-running process in its own process group and waits for a stdout line for which
 * `ready` is true (e.g. READY / SKIP), at most `timeoutMs`. `stop()` sends SIGTERM, then
 * SIGKILL to the group after `graceMs`.
 */
export function startProcess(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; ready: (line: string) => boolean; timeoutMs: number; graceMs?: number; stdin?: boolean }): Promise<Started> {
	installHandlers();
	const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, detached: true, stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"] });
	live.add(child);
	let output = "";
	const waiting: Array<{ prefix: string; resolve: (rest: string) => void; reject: (error: Error) => void }> = [];
	const ask = (line: string, replyPrefix: string): Promise<string> =>
		new Promise((resolve, reject) => {
			if (!child.stdin || child.exitCode !== null || child.signalCode !== null) {
				reject(new Error(`${command}: cannot ask "${line}": no stdin or the process has exited`));
				return;
			}
			waiting.push({ prefix: replyPrefix, resolve, reject });
			child.stdin.write(`${line}\n`);
		});
	child.once("exit", (code, signal) => {
		for (const waiter of waiting.splice(0)) waiter.reject(new Error(`${command} exited (${code ?? signal}) before it answered`));
	});
	const stop = async (): Promise<void> => {
		if (child.exitCode === null && child.signalCode === null) {
			const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
			killGroup(child, "SIGTERM");
			const timer = setTimeout(() => killGroup(child, "SIGKILL"), options.graceMs ?? 3000);
			await exited;
			clearTimeout(timer);
		}
		killGroup(child, "SIGKILL"); // anything the process left in its group
		live.delete(child);
	};
	return new Promise((resolve, reject) => {
		let pending = "";
		const timer = setTimeout(() => {
			void stop();
			reject(new Error(`${command} ${args.join(" ")}: no ready line within ${options.timeoutMs} ms\n${output.slice(-2000)}`));
		}, options.timeoutMs);
		const onData = (chunk: Buffer) => {
			const text = chunk.toString();
			output += text;
			pending += text;
			let newline: number;
			while ((newline = pending.indexOf("\n")) >= 0) {
				const line = pending.slice(0, newline);
				pending = pending.slice(newline + 1);
				const waiter = waiting.findIndex((w) => line.startsWith(w.prefix));
				if (waiter >= 0) {
					const [{ prefix, resolve: answer }] = waiting.splice(waiter, 1) as [(typeof waiting)[number]];
					answer(line.slice(prefix.length));
				} else if (options.ready(line)) {
					clearTimeout(timer);
					resolve({ child, line, output: () => output, stop, ask });
				}
			}
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.once("exit", (code, signal) => {
			live.delete(child);
			clearTimeout(timer);
			reject(new Error(`${command} exited (${code ?? signal}) before it was ready:\n${output.slice(-2000)}`));
		});
		child.once("error", (error) => {
			clearTimeout(timer);
			reject(error);
		});
	});
}

/** Runs a command to completion, killing it (and its group) after `timeoutMs`. */
export function runToEnd(command: string, args: string[], options: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string }): Promise<{ code: number | null; stdout: string; stderr: string }> {
	installHandlers();
	return new Promise((resolve, reject) => {
		const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
		live.add(child);
		let stdout = "";
		let stderr = "";
		child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
		child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
		const timer = setTimeout(() => killGroup(child, "SIGKILL"), options.timeoutMs);
		child.once("error", (error) => {
			clearTimeout(timer);
			live.delete(child);
			reject(error);
		});
		child.once("close", (code) => {
			clearTimeout(timer);
			live.delete(child);
			resolve({ code, stdout, stderr });
		});
	});
}
