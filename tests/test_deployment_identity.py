"""A set-up calls only the API that serves its own deployment (churnlib.identity, GET /health)."""

import os
import shutil

from app import create_app
from churnlib.alerts import observations
from churnlib.identity import IDENTITY_FILE, ensure_deployment_id, read_deployment_id
from helpers import SAMPLE_LATER, base_config, batch, copy_project, free_port, make_project, serving_in_a_thread

ANOTHER = "serves another deployment"


def test_a_deployment_keeps_its_id_when_moved_and_a_copy_gets_its_own(tmp_path):
    production = tmp_path / "production_deployment"
    production.mkdir()
    assert read_deployment_id(production) is None
    first = ensure_deployment_id(production)
    assert ensure_deployment_id(production) == first == read_deployment_id(production)

    practice = tmp_path / "practice" / "production_deployment"
    shutil.copytree(production, practice)  # cp -r: the file comes along
    assert read_deployment_id(practice) is None  # a copy does not pass for the original, even before it deploys
    assert ensure_deployment_id(practice) not in (first, None)
    assert ensure_deployment_id(production) == first

    moved = tmp_path / "moved"
    production.rename(moved)
    assert ensure_deployment_id(moved) == first
    assert ensure_deployment_id(moved) == first  # and stays so where it is now

    (moved / IDENTITY_FILE).write_text("{torn")
    assert read_deployment_id(moved) is None
    assert ensure_deployment_id(moved) not in (first, None)


def test_health_reports_the_deployment_it_serves(deployed, tmp_path):
    client = create_app(deployed.config_path).test_client()
    assert client.get("/health").json["deployment"] is None  # made by the pipeline before it first calls the API
    made = ensure_deployment_id(deployed.deployment)
    assert client.get("/health").json["deployment"] == made
    waiting = create_app(make_project(tmp_path / "empty", sources=()).config_path).test_client().get("/health")
    assert waiting.status_code == 503 and waiting.json["deployment"] is None


def deploy_with_the_api_at(project, url, source_name="dataset3.csv", content=None, *, token_env=None):
    """Deploy a new release of ``project`` with api.url at ``url`` (and a token); return the run line."""
    api = {"url": url, "reload_interval_seconds": 0.05, **({"token_env": token_env} if token_env else {})}
    project.write_config(base_config(api=api, deployment={"policy": "always"}))
    project.add_source(source_name, content or (SAMPLE_LATER / "dataset3.csv").read_text())
    import fullprocess

    assert fullprocess.main(["--config", str(project.config_path)]) == 0
    run = project.last_run()
    assert run["decision"] == "retrained_deployed"
    return run


def recording(app, seen):
    def wsgi(environ, start_response):
        seen.append((environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION")))
        return app(environ, start_response)

    return wsgi


def test_the_pipeline_uses_the_replies_of_the_api_that_serves_its_deployment(deployed, monkeypatch):
    monkeypatch.setenv("CHURN_TEST_TOKEN", "s3cret-token")
    deployed.write_config(base_config(api={"reload_interval_seconds": 0.05, "token_env": "CHURN_TEST_TOKEN"}))
    seen = []
    with serving_in_a_thread(recording(create_app(deployed.config_path), seen)) as url:
        run = deploy_with_the_api_at(deployed, url, token_env="CHURN_TEST_TOKEN")
    assert run["api"]["running"] is True and run["api"]["failed"] == [], run["api"]
    assert run["api"]["serving"] == run["deployed_release_after"]
    assert (deployed.models / "apireturns.txt").exists() and ANOTHER not in deployed.log()
    assert {path for path, _ in seen} >= {"/health", "/prediction", "/scoring"}
    assert read_deployment_id(deployed.deployment) is not None


def test_a_copy_of_production_never_uses_productions_api(deployed, tmp_path, monkeypatch):
    """The practice set-up made with cp -r, api.url left at production's: its replies are not used,
    the token is not sent there, the API-down rule stays quiet, and the warning is logged once."""
    monkeypatch.setenv("CHURN_TEST_TOKEN", "s3cret-token")
    production = deployed
    production_id = ensure_deployment_id(production.deployment)  # as after production's own deploys
    practice = copy_project(production.root, tmp_path / "practice")
    seen = []
    with serving_in_a_thread(recording(create_app(production.config_path), seen)) as url:
        run = deploy_with_the_api_at(practice, url, token_env="CHURN_TEST_TOKEN")
        again = deploy_with_the_api_at(practice, url, "more.csv", batch(41), token_env="CHURN_TEST_TOKEN")
    for tick in (run, again):
        assert tick["api"]["running"] is None and tick["api"]["other_deployment"] == production_id, tick["api"]
        assert not [seen for seen in observations(tick, api_expected=True)[0] if seen.event == "api_down"]
    practice_id = read_deployment_id(practice.deployment)
    assert practice_id not in (None, production_id) and read_deployment_id(production.deployment) == production_id
    assert {path for path, _ in seen} == {"/health"} and {token for _, token in seen} == {None}
    assert not (practice.models / "apireturns.txt").exists()
    warnings = [line for line in practice.log().splitlines() if ANOTHER in line]
    assert len(warnings) == 1, warnings  # once, not after every deploy
    assert (f"the API at {url} {ANOTHER} (its /health reports deployment {production_id}; "
            f"this one is {practice_id})") in warnings[0]


def test_an_api_that_is_down_is_down_not_another_deployment(deployed):
    run = deploy_with_the_api_at(deployed, f"http://127.0.0.1:{free_port()}")
    assert run["api"]["running"] is False and "not running" in run["api"]["summary"]
    assert "other_deployment" not in run["api"] and ANOTHER not in deployed.log()
    down = [seen for seen in observations(run, api_expected=True)[0] if seen.event == "api_down"]
    assert down and down[0].active  # the API-down rule still fires for this deployment's own API


def test_apicalls_refuses_the_api_of_another_deployment_unless_named_with_url(deployed, tmp_path, capsys):
    import apicalls

    production_id = ensure_deployment_id(deployed.deployment)
    practice = copy_project(deployed.root, tmp_path / "practice")
    practice_id = ensure_deployment_id(practice.deployment)
    seen = []
    with serving_in_a_thread(recording(create_app(deployed.config_path), seen)) as url:
        practice.write_config(base_config(api={"url": url}))
        assert apicalls.main(["--config", str(practice.config_path)]) == 1
        assert seen == [("/health", None)] and not (practice.models / "apireturns.txt").exists()
        assert (f"the API at {url} {ANOTHER} (its /health reports deployment {production_id}; this one is "
                f"{practice_id})") in capsys.readouterr().err
        assert apicalls.main(["--config", str(practice.config_path), "--url", url]) == 0  # asked by name
        deployed.write_config(base_config(api={"url": url}))
        assert apicalls.main(["--config", str(deployed.config_path)]) == 0  # its own


def test_apicalls_in_a_copy_that_has_not_deployed_yet_never_sends_productions_api_the_token(deployed, tmp_path, capsys):
    import apicalls

    production_id = ensure_deployment_id(deployed.deployment)
    practice = copy_project(deployed.root, tmp_path / "practice")  # cp -r, no deploy since
    seen = []
    with serving_in_a_thread(recording(create_app(deployed.config_path), seen)) as url:
        practice.write_config(base_config(api={"url": url}))
        assert apicalls.main(["--config", str(practice.config_path)]) == 1
        assert seen == [("/health", None)]
        assert f"{ANOTHER} (its /health reports deployment {production_id}" in capsys.readouterr().err
