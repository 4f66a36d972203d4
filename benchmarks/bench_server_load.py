"""Server throughput under load: N concurrent clients on loopback, batching on vs off, in one run.

Starts egaku's server in this process (uvicorn in a thread, the built-in model, SQLite in a temp
folder) once with batching on and once with it off; each of N client threads sends M text-to-image
requests one after another (Stability's route, which answers when the image is done, or the native
API: submit, then poll the job). Prints images/s and p50/p99 latency per mode, and the on/off ratio.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_server_load.py --clients 4 --requests 3 --steps 20
    .venv/bin/python benchmarks/bench_server_load.py --route native --max-batch 8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import requests  # noqa: E402  (a dependency of diffusers, so always present)

PROMPTS = ["a red circle on the left, blue background", "a yellow star in the top right, black background",
           "two pink rings, white background", "a green square in the center, orange background"]


def start_server(home: Path, *, batching: bool, max_batch: int):
    """(base URL, uvicorn server, thread, key) for a fresh service in `home`."""
    import uvicorn

    from egaku.jobs.service import Service
    from egaku.jobs.settings import ServiceSettings
    from egaku.server import create_app

    settings = ServiceSettings(key_rpm=10**6, max_key_active=10**4, max_user_jobs=10**4)
    service = Service.create(home=home, workers=1, batching=batching, max_batch=max_batch, settings=settings)
    service.add_user("bench")
    key = service.create_key("bench")[1]
    service.grant_credits("bench", 10**9)
    server = uvicorn.Server(uvicorn.Config(create_app(service, studio_dir=None), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread, key


def one_request(session: requests.Session, url: str, route: str, i: int, steps: int) -> float:
    """Seconds from sending request i to having its image."""
    t0 = time.perf_counter()
    prompt = PROMPTS[i % len(PROMPTS)]
    if route == "stability":
        r = session.post(f"{url}/v1/generation/builtin/text-to-image",
                         json={"text_prompts": [{"text": prompt}], "steps": steps, "seed": i + 1})
        r.raise_for_status()
    else:
        r = session.post(f"{url}/api/v1/jobs", json={"prompt": prompt, "steps": steps, "seed": i + 1,
                                                     "sampler": "Euler a"})
        r.raise_for_status()
        job_id = r.json()["id"]
        while (job := session.get(f"{url}/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(0.02)
        assert job["status"] == "succeeded", job
    return time.perf_counter() - t0


def run_mode(args, batching: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url, server, thread, key = start_server(Path(tmp), batching=batching, max_batch=args.max_batch)
        try:
            warm = requests.Session()
            warm.headers["Authorization"] = f"Bearer {key}"
            one_request(warm, url, args.route, 0, args.steps)  # loads the model

            def client(c: int) -> list[float]:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {key}"
                return [one_request(session, url, args.route, c * args.requests + j, args.steps)
                        for j in range(args.requests)]

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                latencies = [s for per_client in pool.map(client, range(args.clients)) for s in per_client]
            wall = time.perf_counter() - t0
        finally:
            server.should_exit = True
            thread.join(60)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return {"batching": batching, "images": len(latencies), "wall_s": round(wall, 2),
            "images_per_s": round(len(latencies) / wall, 3), "p50_s": round(statistics.median(latencies), 2),
            "p99_s": round(p99, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients (threads)")
    ap.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--route", choices=("stability", "native"), default="stability")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    on = run_mode(args, batching=True)
    off = run_mode(args, batching=False)
    ratio = round(on["images_per_s"] / off["images_per_s"], 2)
    if args.json:
        print(json.dumps({"config": vars(args), "on": on, "off": off, "ratio_on_off": ratio}, indent=2))
        return
    print(f"{args.clients} clients x {args.requests} requests, built-in model 128x128, {args.steps} steps, "
          f"route {args.route}, max batch {args.max_batch}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print(f"{'batching':<10}{'images/s':>10}{'p50 s':>8}{'p99 s':>8}{'wall s':>8}")
    for row in (on, off):
        print(f"{'on' if row['batching'] else 'off':<10}{row['images_per_s']:>10}{row['p50_s']:>8}"
              f"{row['p99_s']:>8}{row['wall_s']:>8}")
    print(f"throughput ratio on/off: {ratio}x")


if __name__ == "__main__":
    main()
