"""config.json: defaults, validation with one-line errors naming the key, and --config on every script."""

import json

import pytest

from churnlib.config import (
    REQUIRED,
    ConfigError,
    config_from_dict,
    defaults_as_dict,
    documented_keys,
    every_key_with_default,
    load_config,
)
from helpers import SAMPLE_LATER, base_config, make_project, run_script, serving_in_a_thread


def load(tmp_path, raw):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw) if not isinstance(raw, str) else raw)
    return load_config(path)


def test_an_empty_config_gets_every_default(tmp_path):
    config = load(tmp_path, {})
    assert config.paths.source == (tmp_path / "sourcedata").resolve()
    assert config.model.algorithm == "logistic_regression"
    assert config.schema.target == "exited"
    assert config.drift.correction == "holm"
    assert config.deployment.policy == "not_worse"
    assert config.api.url == "http://127.0.0.1:8000"


def test_paths_resolve_from_the_config_files_folder_not_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "practice").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load(tmp_path / "practice", {"paths": {"log_folder": "mylogs"}})
    assert config.paths.logs == tmp_path / "practice" / "mylogs"


def test_column_names_in_the_config_are_normalised_like_data_headers(tmp_path):
    config = load(tmp_path, {"schema": {"target": "Churn ", "id_columns": ["customerID"],
                                        "categorical_columns": ["Call  Failure"]}})
    assert config.schema.target == "churn"
    assert config.schema.id_columns == ("customerid",)
    assert config.schema.categorical_columns == ("call_failure",)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"drfit": {}}, "unknown key 'drfit'"),
        ({"drift": {"alpah": 0.1}}, "unknown key 'drift.alpah'"),
        ({"drift": {"alpha": 1.5}}, "drift.alpha: must be a number in (0, 1), got 1.5"),
        ({"drift": {"alpha": "0.05"}}, "drift.alpha: must be a number, got '0.05'"),
        ({"score_drift": {"max_drop": float("nan")}}, "score_drift.max_drop: must be a number, got nan"),
        ({"paths": {"test_data_folder": "sourcedata"}}, "paths.test_data_folder: must differ from paths.source_folder"),
        ({"drift": {"min_rows": 2.5}}, "drift.min_rows: must be a whole number, got 2.5"),
        ({"model": {"algorithm": "svm"}}, "model.algorithm: must be one of logistic_regression, xgboost; got 'svm'"),
        ({"model": {"params": [1]}}, "model.params: must be an object"),
        ({"model": {"random_seed": True}}, "model.random_seed: must be a whole number, got True"),
        ({"schema": {"id_columns": "corporation"}}, "schema.id_columns: must be a list of column names"),
        ({"schema": {"target": "a", "id_columns": ["a"]}}, "schema.id_columns: must not hold the target 'a'"),
        ({"paths": {"source_folder": ""}}, "paths.source_folder: must be a non-empty string"),
        ({"paths": {"model_folder": "x", "deployment_folder": "x"}}, "paths.deployment_folder: must differ from paths.model_folder"),
        ({"deployment": {"policy": "sometimes"}}, "deployment.policy: must be one of always, not_worse, better"),
        ({"deployment": {"keep_releases": 1}}, "deployment.keep_releases: must be >= 2, got 1"),
        ({"api": {"url": "localhost:8000"}}, "api.url: must start with http:// or https://"),
        ({"api": {"unknown_categories": "ignore"}}, "api.unknown_categories: must be one of warn, reject"),
        ({"api": {"token_env": "ÉTOKEN"}}, "api.token_env: must name an environment variable (letters, digits, _)"),
        ({"model": {"threshold": 1}}, "model.threshold: must be a number in (0, 1), got 1"),
        ({"outreach": {"contact_cost": 5}}, "outreach.customer_value: required when the outreach section is present"),
        ({"outreach": {"customer_value": 100, "contact_cost": -1}}, "outreach.contact_cost: must be zero or more"),
        ({"outreach": {"customer_value": 100, "contact_cost": 1, "success_rate": 0}}, "outreach.success_rate: must be"),
        ({"outreach": {"customer_value": 1, "contact_cost": 1, "rate": 1}}, "unknown key 'outreach.rate'"),
        ({"paths": {"scoring_folder": "sourcedata"}}, "paths.scoring_folder: must differ from paths.source_folder"),
        ({"alerts": {"events": ["drfit"]}}, "alerts.events: unknown event 'drfit'; events are drift, deployed"),
        ({"alerts": {"email": {"host": "mail"}}}, "alerts.email.sender: required"),
        ({"alerts": {"email": {"host": "m", "sender": "a@b", "recipients": ["x"]}}},
         "alerts.email.recipients: must be an e-mail address, got 'x'"),
        ({"alerts": {"email": {"host": "m", "sender": "a@b", "recipients": ["c@d"], "user": "u"}}},
         "alerts.email.password_env: required when alerts.email.user is set"),
        ({"alerts": {"email": {"host": "m", "sender": "a@b", "recipients": ["c@d"], "security": "ssl"}}},
         "alerts.email.security: must be one of starttls, tls, none; got 'ssl'"),
        ({"alerts": {"email": {"host": "m", "sender": "a@b", "recipients": ["c@d"], "port": 0}}},
         "alerts.email.port: must be between 1 and 65535, got 0"),
        ({"alerts": {"email": {"host": "m", "sender": "a@b", "recipients": ["c@d"], "pasword_env": "X"}}},
         "unknown key 'alerts.email.pasword_env'"),
        ({"alerts": {"webhook": "http://x"}}, "alerts.webhook: must be an object"),
        ({"alerts": {"webhook": {"url": "hooks.slack.com/x"}}}, "alerts.webhook.url: must start with http:// or https://"),
        ([], "must hold a JSON object at the top level"),
    ],
)
def test_a_bad_config_is_a_one_line_error_naming_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, raw)
    text = str(error.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "config.json"))


def test_the_outreach_section_is_optional_and_complete_when_given(tmp_path):
    assert load(tmp_path, {}).outreach is None
    assert load(tmp_path, {"outreach": None}).outreach is None
    outreach = load(tmp_path, {"outreach": {"customer_value": 1200, "contact_cost": 40}}).outreach
    assert (outreach.customer_value, outreach.contact_cost, outreach.success_rate) == (1200.0, 40.0, 1.0)
    assert "outreach" not in defaults_as_dict() and "outreach" in every_key_with_default()


def test_invalid_json_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid JSON: .* at line 2"):
        load(tmp_path, '{\n  "drift": {,}\n}')


def test_a_missing_config_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.json")


def test_the_shipped_configs_are_valid():
    from helpers import IRANIAN, SAMPLE_CONFIG

    assert load_config(SAMPLE_CONFIG).schema.target == "exited"  # the shipped config.json, as samples/ keeps it
    assert load_config(IRANIAN / "config.json").schema.target == "churn"


def test_alert_channels_are_optional_sub_sections_with_their_own_defaults(tmp_path):
    config = load(tmp_path, {"alerts": {"email": {"host": "smtp.example.com", "sender": "churn@example.com",
                                                  "recipients": ["team@example.com"]},
                                        "webhook": {"url": "https://hooks.example.com/T0/B0/x/"}}})
    assert config.alerts.email.port == 587 and config.alerts.email.security == "starttls"
    assert config.alerts.webhook.url.endswith("/x/")
    assert config.alerts.channels == ("email", "webhook")
    assert load(tmp_path, {}).alerts.channels == ()


def test_the_defaults_validate_as_a_config(tmp_path):
    config = config_from_dict(defaults_as_dict(), file=tmp_path / "config.json")
    assert config.drift.alpha == 0.025 and config.score_drift.alpha == 0.025


@pytest.mark.parametrize("script", ["fullprocess.py", "ingestion.py", "training.py", "scoring.py",
                                    "deployment.py", "diagnostics.py", "reporting.py", "apicalls.py"])
def test_every_script_takes_config_and_reports_a_bad_one_in_one_line(tmp_path, script):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(base_config(paths={"log_folder": 7})))  # a section every script needs
    result = run_script(script, "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}: paths.log_folder: must be a non-empty string"]
    helped = run_script(script, "--help")
    assert helped.returncode == 0 and "--config PATH" in helped.stdout


def test_the_docs_list_every_config_key_with_its_default():
    import re

    from helpers import ROOT

    table = (ROOT / "docs" / "configuration.md").read_text()
    sections = "|".join(every_key_with_default())
    rows = re.findall(rf"^\| `((?:{sections})\.[a-z0-9_.]+)` \| `([^`]*)` \|", table, flags=re.MULTILINE)
    listed = {key: value for key, value in rows if not key.endswith(".py")}  # not deployment.py's row
    defaults = documented_keys()
    assert set(listed) == set(defaults)
    for key, value in defaults.items():
        assert (listed[key] == "required") if value is REQUIRED else json.loads(listed[key]) == value, key


def test_a_setting_refused_at_run_time_names_the_config_file_in_use(tmp_path):
    project = make_project(tmp_path / "project")
    other = project.root / "other.json"
    other.write_text(json.dumps(base_config(model={"params": {"depth": 3}})))
    result = run_script("fullprocess.py", "--config", str(other), "--no-api")
    assert result.returncode == 2
    assert f"{other}: model.params: 'depth' not a parameter of LogisticRegression" in result.stderr
    assert "config.json" not in result.stderr

    other.write_text(json.dumps(base_config(schema={"target": "plan"})))
    result = run_script("ingestion.py", "--config", str(other))
    assert result.returncode == 2, result.stderr
    assert f"{other}: schema: target is 'plan', the ingested data's is 'exited'" in result.stderr


@pytest.mark.parametrize("args, broken", [
    (["deployment.py", "--list"], {"drift": {"alpha": 7}}),
    (["deployment.py", "--rollback"], {"model": {"algorithm": "svm"}}),
    (["diagnostics.py"], {"deployment": {"policy": "sometimes"}}),
    (["diagnostics.py"], {"api": {"url": "localhost:8000"}, "drift": {"alpha": 7}}),
])
def test_incident_tools_work_when_a_section_they_do_not_need_is_broken(deployed, args, broken):
    from churnlib.config import config_from_dict  # noqa: F401 (the loader under test)

    config = json.loads(deployed.config_path.read_text())
    for section, values in broken.items():
        config[section] = {**config.get(section, {}), **values}
    if args[0] == "deployment.py" and "--rollback" in args:
        deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
        assert deployed.tick() == 0 and len(deployed.pointer()["releases"]) == 2
    deployed.write_config(config)
    result = run_script(args[0], "--config", str(deployed.config_path), *args[1:])
    assert result.returncode == 0, result.stderr
    for section in broken:
        warning = [line for line in result.stderr.splitlines() if f" {section}." in line]
        assert len(warning) == 1, result.stderr  # said once (a print and the log's console line said it twice)
        assert warning[0].startswith("WARNING ")
        assert "ignored" in warning[0] and str(deployed.config_path) in warning[0]
    assert "ignored" in (deployed.logs / f"{args[0].removesuffix('.py')}.log").read_text()


def test_a_deploy_by_hand_refuses_a_config_with_any_error(deployed):
    config = json.loads(deployed.config_path.read_text())
    config["drift"] = {**config.get("drift", {}), "alpha": 5}
    deployed.write_config(config)
    before = deployed.pointer()
    result = run_script("deployment.py", "--config", str(deployed.config_path))
    assert result.returncode == 2, result.stderr
    assert "drift.alpha" in result.stderr and "ignored" not in result.stderr
    assert deployed.pointer() == before


def test_an_incident_tool_still_refuses_a_broken_section_it_needs(deployed):
    config = json.loads(deployed.config_path.read_text())
    config["paths"] = {"deployment_folder": ""}
    deployed.write_config(config)
    result = run_script("deployment.py", "--config", str(deployed.config_path), "--list")
    assert result.returncode == 2
    assert "paths.deployment_folder: must be a non-empty string" in result.stderr


@pytest.mark.parametrize("section, key", [({"alerts": {"webhook": {"url": "{url}"}}}, "alerts.webhook.url"),
                                          ({"api": {"url": "{url}"}}, "api.url")])
def test_a_url_with_a_user_and_password_is_refused_without_showing_them(tmp_path, section, key):
    url = "https://alice:s3cret@hooks.example.com/T0/B0/x"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, json.loads(json.dumps(section).replace("{url}", url)))
    message = str(caught.value)
    assert f"{key}: holds a user name or password before '@' (https://...@hooks.example.com)" in message
    assert "s3cret" not in message and "alice" not in message


@pytest.mark.parametrize("token, problem", [("abc123\r", "holds a line break (CR or LF)"),
                                            ("abc\n123", "holds a line break (CR or LF)"),
                                            ("abc 123", "holds a space or another blank"),
                                            ("tökén123", "holds a character that is not ASCII"),
                                            ("abc\x01", "holds a control character")])
def test_an_api_token_unfit_for_a_header_is_refused_at_start_up_without_showing_it(tmp_path, monkeypatch, token,
                                                                                   problem):
    from churnlib.config import api_token

    monkeypatch.setenv("CHURN_TEST_API_TOKEN", token)
    config = load(tmp_path, {"api": {"token_env": "CHURN_TEST_API_TOKEN"}})
    with pytest.raises(ConfigError) as caught:
        api_token(config)
    message = str(caught.value)
    assert f"api.token_env: the value of the environment variable CHURN_TEST_API_TOKEN {problem}" in message
    assert token.strip() not in message and "abc" not in message


def _replying(body: bytes):
    """A WSGI app that answers every request with ``body`` (JSON), whatever it is asked."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def test_a_deploying_tick_with_a_bad_token_writes_its_run_line_and_says_the_api_was_not_called(project):
    """The token used to pass the start-up check and fail the tick after its deploy (ValueError in cron.log)."""
    # Answers /health as the API does; never asked for more.
    with serving_in_a_thread(_replying(b'{"status": "ok", "release_id": null}')) as url:
        project.write_config(base_config(api={"url": url, "token_env": "CHURN_TEST_API_TOKEN",
                                              "reload_interval_seconds": 0.1}))
        result = run_script("fullprocess.py", "--config", str(project.config_path),
                            env={"CHURN_TEST_API_TOKEN": "s3cret-token\r"})
    assert result.returncode == 0, result.stderr
    [run] = [json.loads(line) for line in (project.logs / "runs.jsonl").read_text().splitlines()]
    assert run["decision"] == "cold_start" and run["deployed_release_after"]
    assert run["api"]["summary"].startswith("not called: api.token_env: the value of the environment variable "
                                            "CHURN_TEST_API_TOKEN holds a line break (CR or LF)")
    assert "s3cret" not in result.stderr and "s3cret" not in (project.logs / "fullprocess.log").read_text()
    assert "s3cret" not in (project.logs / "runs.jsonl").read_text()


def test_a_deploying_tick_survives_any_error_while_calling_the_api(project):
    """Something that is not the API on api.url (here: replies nested too deep for json) cannot fail the tick."""
    with serving_in_a_thread(_replying(b"[" * 200_000 + b"]" * 200_000)) as url:  # json.loads: RecursionError
        project.write_config(base_config(api={"url": url, "reload_interval_seconds": 0.1}))
        result = run_script("fullprocess.py", "--config", str(project.config_path))
    assert result.returncode == 0, result.stderr
    [run] = [json.loads(line) for line in (project.logs / "runs.jsonl").read_text().splitlines()]
    assert run["decision"] == "cold_start" and run["deployed_release_after"]
    assert run["api"]["summary"].startswith("not called: RecursionError in ")
