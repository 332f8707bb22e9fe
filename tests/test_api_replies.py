"""Clean replies (a warning that clears, no server paths) and the optional API token."""

import time

import pytest

from app import create_app
from churnlib.config import ConfigError
from helpers import SAMPLE_LATER, base_config, run_script

RECORD = {"lastmonth_activity": 12, "lastyear_activity": 300, "number_of_employees": 9, "plan": "basic"}


def broken_second_release(deployed):
    """Serve the first release, deploy a second one and damage its model: the API warns and keeps the first."""
    deployed.write_config(base_config(api={"reload_interval_seconds": 0.05}, deployment={"policy": "always"}))
    client = create_app(deployed.config_path).test_client()
    first = client.get("/health").json["release_id"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    second = deployed.pointer()["current"]
    model = deployed.deployment / "releases" / second / "trainedmodel.pkl"
    intact = model.read_bytes()
    model.write_bytes(intact[:-10])
    time.sleep(0.1)
    health = client.get("/health").json
    assert health["release_id"] == first and f"release {second} not loaded" in health["warning"]
    return client, first, second, model, intact


@pytest.mark.parametrize("fix", ["rollback", "restore the model file"])
def test_health_clears_its_warning_once_the_problem_is_gone(deployed, fix):
    client, first, second, model, intact = broken_second_release(deployed)
    if fix == "rollback":
        result = run_script("deployment.py", "--config", str(deployed.config_path), "--rollback", "--to", first)
        assert result.returncode == 0, result.stderr
        expected = first
    else:
        model.write_bytes(intact)
        expected = second
    time.sleep(0.1)
    health = client.get("/health").json
    assert health["release_id"] == expected
    assert "warning" not in health, health


def test_no_reply_names_a_path_on_the_server(deployed):
    client, *_ = broken_second_release(deployed)
    root = str(deployed.root)
    replies = [client.get("/health"), client.post("/prediction", json=RECORD), client.get("/scoring"),
               client.get("/summarystats"), client.get("/diagnostics"), client.get("/nope"),
               client.post("/prediction", json={"path": "testdata/nothing.csv"}),
               client.post("/prediction", json={"path": str(deployed.root / "config.json")})]
    (deployed.ingested / "ingestion_record.json").write_text("{damaged")
    replies.append(client.get("/summarystats"))
    (deployed.deployment / "current.json").write_text("{damaged")
    time.sleep(0.1)
    replies.append(client.get("/health"))
    texts = [reply.get_data(as_text=True) for reply in replies]
    assert all(reply.is_json for reply in replies), texts
    leaking = [text for text in texts if root in text or "/tmp/" in text]
    assert leaking == [], leaking
    assert replies[-2].status_code == 503 and "ingesteddata/ingestion_record.json: not valid JSON" in texts[-2]
    assert "production_deployment/current.json: not valid JSON" in texts[-1]


# --- the optional API token ---------------------------------------------------------------------


@pytest.fixture
def token_client(deployed, monkeypatch):
    monkeypatch.setenv("CHURN_TEST_TOKEN", "s3cret-token")
    deployed.write_config(base_config(api={"token_env": "CHURN_TEST_TOKEN"}))
    return create_app(deployed.config_path).test_client()


@pytest.mark.parametrize("method, route", [("POST", "/prediction"), ("GET", "/scoring"), ("GET", "/summarystats"),
                                           ("GET", "/diagnostics"), ("GET", "/nope")])
def test_with_a_token_every_route_but_health_needs_it(token_client, method, route):
    body = {"json": RECORD} if method == "POST" else {}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        reply = token_client.open(route, method=method, headers=headers, **body)
        assert reply.status_code == 401, (headers, reply.json)
        assert reply.json == {"error": "missing or wrong API token: send the header 'Authorization: Bearer <token>'"}
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    reply = token_client.open(route, method=method, headers={"Authorization": "Bearer s3cret-token"}, **body)
    assert reply.status_code == (404 if route == "/nope" else 200)
    assert token_client.get("/health").status_code == 200


def test_a_token_variable_that_is_not_set_stops_the_api_from_starting(deployed, monkeypatch):
    monkeypatch.delenv("CHURN_TEST_TOKEN", raising=False)
    deployed.write_config(base_config(api={"token_env": "CHURN_TEST_TOKEN"}))
    with pytest.raises(ConfigError, match="api.token_env: the environment variable CHURN_TEST_TOKEN is not set"):
        create_app(deployed.config_path)


def test_without_a_token_setting_no_route_needs_one(deployed):
    client = create_app(deployed.config_path).test_client()
    assert client.post("/prediction", json=RECORD).status_code == 200
