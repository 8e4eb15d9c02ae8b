"""dev/stack.py's helpers over real processes: the managed-identity option, planted files, host pids."""

from __future__ import annotations

from pathlib import Path

from openai import AzureOpenAI

from dev.sim.files import synthetic
from dev.stack import CHAT, RegionSpec, Stack


def test_hosts_sign_in_with_the_simulated_managed_identity(tmp_path: Path) -> None:
    regions = (RegionSpec("eastus", 10_000),)
    secret = "-a-secret-that-looks-like-an-option"
    with Stack(tmp_path, regions, time_scale=30.0, credential="managed-identity", identity_header=secret) as stack:
        assert stack.host_env(0, tmp_path / "gateway.json")["GATEWAY_CREDENTIAL"] == "managed-identity"
        client = AzureOpenAI(azure_endpoint=stack.url, api_key=stack.client_key, api_version="2024-10-21")
        reply = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert reply.choices[0].message.content == "alpha bravo"
        assert stack.identity_state()["token_requests"] >= 1  # the host's token came from the endpoint
        assert stack.set_identity_failing(True, status=500)["failing"] is True
        assert stack.identity_state()["status"] == 500
        stack.set_identity_failing(False)

        [pid] = stack.host_pids
        assert "VmRSS:" in Path(f"/proc/{pid}/status").read_text()
        assert "VmRSS:" in Path(f"/proc/{stack.simulator_pid}/status").read_text()
        assert stack.set_latency("eastus", per_token=0.0) == {"ttft": 0.3, "per_token": 0.0}
        file = stack.plant_file("eastus", 1_000_003, filename="big.jsonl")
        assert (file["bytes"], file["filename"]) == (1_000_003, "big.jsonl")
        region = AzureOpenAI(azure_endpoint=stack.region_urls["eastus"], api_key="any", api_version="2024-10-21")
        assert region.files.content(file["id"]).read() == b"".join(synthetic(1_000_003))
        assert stack.region_stats("eastus")["objects"] == {"file": 1}
