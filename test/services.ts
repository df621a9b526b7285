/**
 * Where the real services for store tests live, and whether they are up. URLs come from
 * environment variables with the project's defaults (all on 127.0.0.1). A missing service
 * makes its tests skip with a one-line reason, except under CI=true, where it is a failure.
 * MongoDB cannot be installed on the project's machines: its tests run only when MONGODB_URL
 * is set, and skip otherwise (also under CI).
 */
import { connect } from "node:net";

export type ServiceName = "postgres" | "pgbouncer" | "mysql" | "redis" | "redis-cluster" | "memcached" | "mongodb";

const env = process.env;

export const serviceURL = {
	postgres: env.POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test",
	/** PgBouncer in transaction mode in front of that PostgreSQL (.ci/services.sh starts one). */
	pgbouncer: env.PGBOUNCER_URL ?? "postgres://postgres@127.0.0.1:6433/test",
	mysql: env.MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test",
	redis: env.REDIS_URL ?? "redis://127.0.0.1:6379",
	/** Comma-separated host:port of the cluster's masters. */
	"redis-cluster": env.REDIS_CLUSTER_NODES ?? "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
	/** Comma-separated host:port of the memcached servers. */
	memcached: env.MEMCACHED_SERVERS ?? "127.0.0.1:11211,127.0.0.1:11212",
	mongodb: env.MONGODB_URL ?? "",
} satisfies Record<ServiceName, string>;

export const isCI = env.CI === "true";

function endpoints(name: ServiceName): Array<{ host: string; port: number }> {
	const url = serviceURL[name];
	if (name === "redis-cluster" || name === "memcached") {
		return url.split(",").map((hostPort) => {
			const [host, port] = hostPort.trim().split(":");
			return { host: host!, port: Number(port) };
		});
	}
	const parsed = new URL(url);
	const defaults: Record<string, number> = { postgres: 5432, pgbouncer: 6433, mysql: 3306, redis: 6379, mongodb: 27017 };
	return [{ host: parsed.hostname, port: parsed.port ? Number(parsed.port) : defaults[name]! }];
}

function reachable(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = connect({ host, port });
		const done = (ok: boolean) => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(timeoutMs, () => done(false));
		socket.once("connect", () => done(true));
		socket.once("error", () => done(false));
	});
}

/**
 * `undefined` when every endpoint of the service answers; otherwise a one-line skip reason.
 * Under CI=true a missing service throws instead (MongoDB excepted, see above).
 */
export async function requireService(name: ServiceName): Promise<string | undefined> {
	if (name === "mongodb" && !serviceURL.mongodb) {
		return "MongoDB: set MONGODB_URL to run these tests (no MongoDB server can be installed on the project's machines)";
	}
	for (const { host, port } of endpoints(name)) {
		if (!(await reachable(host, port))) {
			const reason = `${name} is not reachable at ${host}:${port} (start it, or set its URL variable; .ci/run starts it)`;
			if (isCI && name !== "mongodb") throw new Error(`CI=true and ${reason}`);
			return reason;
		}
	}
	return undefined;
}
