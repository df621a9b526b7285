// The autocannon fallback, run in its own (pinned) process: prints one AC_JSON line.
import autocannon from "autocannon";

const spec = JSON.parse(process.argv[2]);
const result = await autocannon({
	url: spec.url,
	connections: spec.connections,
	duration: spec.duration,
	headers: spec.cookie ? { cookie: spec.cookie } : {},
});
const requests = result.requests.total;
const durationS = result.duration;
process.stdout.write(
	`AC_JSON ${JSON.stringify({
		requests,
		durationS,
		reqPerSec: requests / durationS,
		p50Ms: result.latency.p50,
		p99Ms: result.latency.p99,
		errors: result.errors + result.timeouts + result.non2xx,
	})}\n`,
);
