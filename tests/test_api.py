"""The API through Flask's test client: every endpoint, every error, the fast path, hot reload."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from app import create_app
from churnlib.dataset import FrozenSchema
from churnlib.modelstore import load_deployed
from churnlib.pipeline import FastPredictor, records_to_batch
from helpers import SAMPLE_LATER, base_config, make_project
from scoring import read_test_data

RECORD = {"corporation": "abcd", "lastmonth_activity": 120, "lastyear_activity": 1500,
          "number_of_employees": 40, "plan": "basic"}


@pytest.fixture
def client(deployed):
    deployed.write_config(base_config(api={"reload_interval_seconds": 0.05}))
    app = create_app(deployed.config_path)
    return app.test_client()


def test_health_names_the_deployed_release(client, deployed):
    reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.json["release_id"] == deployed.pointer()["current"]


def test_health_is_503_with_the_reason_before_anything_is_deployed(empty_project):
    client = create_app(empty_project.config_path).test_client()
    reply = client.get("/health")
    assert reply.status_code == 503
    assert reply.json == {"error": "no release deployed yet", "deployment": None}  # none made yet
    assert client.post("/prediction", json=RECORD).status_code == 503


def test_a_single_record_gets_class_probability_and_release(client, deployed):
    reply = client.post("/prediction", json=RECORD)
    assert reply.status_code == 200, reply.json
    body = reply.json
    assert body["release_id"] == deployed.pointer()["current"] and body["count"] == 1
    prediction = body["predictions"][0]
    assert prediction["churn"] in (0, 1) and 0 < prediction["probability"] < 1
    assert prediction["corporation"] == "abcd"
    assert prediction["churn"] == int(prediction["probability"] > 0.5)


def test_every_record_format_gives_the_same_predictions(client):
    columns = list(RECORD)
    other = dict(RECORD, plan="premium", lastmonth_activity=3)
    forms = [
        {"json": {"records": [RECORD, other]}},
        {"json": [RECORD, other]},
        {"json": {"dataframe_records": [RECORD, other]}},
        {"json": {"dataframe_split": {"columns": columns, "data": [[RECORD[c] for c in columns], [other[c] for c in columns]]}}},
        {"data": ",".join(columns) + "\n" + ",".join(str(RECORD[c]) for c in columns) + "\n"
                 + ",".join(str(other[c]) for c in columns) + "\n", "content_type": "text/csv"},
    ]
    probabilities = []
    for form in forms:
        reply = client.post("/prediction", **form)
        assert reply.status_code == 200, (form, reply.json)
        probabilities.append([p["probability"] for p in reply.json["predictions"]])
    for other_form in probabilities[1:]:
        assert other_form == pytest.approx(probabilities[0], abs=1e-12)


def test_a_dataset_path_inside_the_data_folders_is_predicted(client):
    reply = client.post("/prediction", json={"path": "testdata/testdata.csv"})
    assert reply.status_code == 200, reply.json
    assert reply.json["count"] == 300


def test_names_are_normalised_and_extra_columns_ignored(client):
    messy = {"Corporation": "x", "LastMonth Activity": "120", "lastyear-activity": 1500.0,
             "Number of Employees": None, "PLAN": " basic ", "favourite colour": "green", "": 1, "日本": 2}
    reply = client.post("/prediction", json=messy)
    assert reply.status_code == 200, reply.json


@pytest.mark.parametrize("record, message", [
    ({k: v for k, v in RECORD.items() if k != "plan"}, "record 0: feature 'plan' missing"),
    (dict(RECORD, lastmonth_activity="lots"), "record 0: column 'lastmonth_activity': 'lots' is not a number"),
    (dict(RECORD, lastmonth_activity={"a": 1}), "column 'lastmonth_activity': expected a number, got an object"),
    (dict(RECORD, lastmonth_activity=[1]), "column 'lastmonth_activity': expected a number, got a list"),
    (dict(RECORD, lastmonth_activity=True), "column 'lastmonth_activity': expected a number, got true/false"),
    (dict(RECORD, plan={"x": 1}), "column 'plan': expected a category, got an object"),
    (dict(RECORD, lastyear_activity=10**400), "column 'lastyear_activity': number too large"),
])
def test_a_bad_record_is_a_400_naming_record_and_column(client, record, message):
    reply = client.post("/prediction", json=record)
    assert reply.status_code == 400
    assert message in reply.json["error"]


def test_the_second_bad_record_is_named(client):
    reply = client.post("/prediction", json={"records": [RECORD, dict(RECORD, plan=None, number_of_employees="x")]})
    assert reply.status_code == 400
    assert reply.json["error"] == "record 1: column 'number_of_employees': 'x' is not a number"


def test_a_few_records_are_read_as_the_same_records_in_a_large_batch(deployed):
    # A request's few records (up to FEW_RECORDS) are read one by one, a larger batch a column at a time.
    from churnlib.pipeline import FEW_RECORDS

    schema = FrozenSchema.from_dict(load_deployed(deployed.deployment).metadata["schema"])
    records = [{"corporation": [f"c{i}", i, {"id": i}, None][i % 4],
                "lastmonth_activity": [120, 3.5, None, -0.0, 10**15][i % 5],
                "lastyear_activity": ["1500", " 12.5 ", "", "NA", None, "-3e2"][i % 6],
                "number_of_employees": [40.0, 0.004, None][i % 3],
                "plan": ["basic", " premium ", None, 7, True, 2.5, ""][i % 7]} for i in range(42)]
    whole = records_to_batch(records, schema)
    for index, record in enumerate(records):
        alone = records_to_batch([record], schema)
        np.testing.assert_array_equal(alone.numeric[0], whole.numeric[index])
        assert [column[0] for column in alone.categorical] == [column[index] for column in whole.categorical]
        assert {key: values[0] for key, values in alone.ids.items()} == {key: values[index] for key, values in whole.ids.items()}
    few = records_to_batch(records[:FEW_RECORDS], schema)
    np.testing.assert_array_equal(few.numeric, whole.numeric[:FEW_RECORDS])
    assert [list(column) for column in few.categorical] == [list(column[:FEW_RECORDS]) for column in whole.categorical]


def test_missing_values_are_imputed_not_refused(client):
    reply = client.post("/prediction", json=dict(RECORD, number_of_employees=None, plan=None, lastmonth_activity=""))
    assert reply.status_code == 200


@pytest.mark.parametrize("path, status", [
    ("../config.json", 403),
    ("config.json", 403),
    ("/etc/passwd", 403),
    ("testdata/../../../../etc/passwd", 403),
    ("testdata/../config.json", 403),
    ("%2e%2e/config.json", 403),
    ("testdata/%2e%2e%2fconfig.json", 404),
    ("testdata/nope.csv", 404),
    ("testdata/link_out.csv", 403),
    ("testdata", 400),
    ("testdata/notes.txt", 400),
    ("testdata/\x00.csv", 400),
    ("", 400),
])
def test_a_path_outside_the_data_folders_is_refused(client, deployed, path, status):
    outside = deployed.root / "secret.csv"
    outside.write_text("corporation,lastmonth_activity\nx,1\n")
    os.symlink(outside, deployed.root / "testdata" / "link_out.csv")
    (deployed.root / "testdata" / "notes.txt").write_text("x")
    reply = client.post("/prediction", json={"path": path})
    assert reply.status_code == status, reply.json
    assert "error" in reply.json
    assert "secret" not in json.dumps(reply.json) or status == 403


@pytest.mark.parametrize("kwargs, status, message", [
    ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ({"data": "a=1", "content_type": "application/x-www-form-urlencoded"}, 415, "send application/json or text/csv"),
    ({"data": "x"}, 415, "Content-Type missing"),
    ({"json": "just a string"}, 400, "must be an object"),
    ({"json": {"records": "nope"}}, 400, "'records' must be a list"),
    ({"json": {"records": []}}, 400, "no records"),
    ({"json": {"records": [1, 2]}}, 400, "record 0: expected an object"),
    ({"json": {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}}, 400, "row must be a list of 1 values"),
    ({"data": "a,b\n1\n", "content_type": "text/csv"}, 400, "record 0: 1 fields, the header has 2"),
    ({"data": b"\xff\xfe", "content_type": "text/csv"}, 400, "not UTF-8"),
])
def test_bad_requests_get_a_json_error_with_the_right_status(client, kwargs, status, message):
    reply = client.post("/prediction", **kwargs)
    assert reply.status_code == status
    assert message in reply.json["error"]


def test_a_body_over_the_limit_is_413(deployed):
    deployed.write_config(base_config(api={"max_request_bytes": 2048}))
    client = create_app(deployed.config_path).test_client()
    reply = client.post("/prediction", data=b"[" + b"1," * 5000 + b"1]", content_type="application/json")
    assert reply.status_code == 413
    assert "larger than the limit of 2048 bytes" in reply.json["error"]


def test_too_many_records_is_413(deployed):
    deployed.write_config(base_config(api={"max_records": 5}))
    client = create_app(deployed.config_path).test_client()
    reply = client.post("/prediction", json=[RECORD] * 6)
    assert reply.status_code == 413 and "at most 5 per request" in reply.json["error"]


def test_unknown_routes_and_wrong_methods_get_json_errors(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and "routes: /prediction" in missing.json["error"]
    wrong = client.get("/prediction")
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json["error"]
    assert "POST" in wrong.headers["Allow"]
    assert client.delete("/scoring").status_code == 405


def test_an_unexpected_error_is_a_500_without_a_stack_trace(deployed, monkeypatch):
    app = create_app(deployed.config_path)
    client = app.test_client()
    assert client.get("/health").status_code == 200  # the release is loaded, its fast path checked
    monkeypatch.setattr(FastPredictor, "probabilities", lambda *a: 1 / 0)
    reply = client.post("/prediction", json=RECORD)
    assert reply.status_code == 500
    assert reply.json == {"error": "internal error; the server log has the details"}
    assert not app.debug


def test_scoring_gives_the_release_scores_f1_first_computed_once(client, deployed):
    reply = client.get("/scoring")
    assert reply.status_code == 200
    assert list(reply.json)[:5] == ["f1", "precision", "recall", "accuracy", "roc_auc"]
    release = deployed.pointer()["current"]
    stored = json.loads((deployed.deployment / "releases" / release / "latestscore.json").read_text())
    assert reply.json["f1"] == stored["f1"]
    # Computed at deploy time, not per call: changing the test data does not change the reply.
    (deployed.root / "testdata" / "testdata.csv").write_text("garbage")
    assert client.get("/scoring").json["f1"] == stored["f1"]


def test_summarystats_follow_the_data_version(client, deployed):
    first = client.get("/summarystats").json
    assert set(first["columns"]) == {"lastmonth_activity", "lastyear_activity", "number_of_employees"}
    assert first["rows"] == 790
    frame = pd.read_csv(deployed.ingested / "finaldata.csv")
    assert first["columns"]["lastmonth_activity"]["mean"] == pytest.approx(frame["lastmonth_activity"].mean())
    assert first["columns"]["lastmonth_activity"]["median"] == pytest.approx(frame["lastmonth_activity"].median())
    assert first["columns"]["lastmonth_activity"]["std"] == pytest.approx(frame["lastmonth_activity"].std())
    deployed.add_source("more.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    deployed.tick()
    second = client.get("/summarystats").json
    assert second["rows"] == 1190 and second["data_version"] > first["data_version"]


def test_diagnostics_answer_without_the_network(client):
    body = client.get("/diagnostics").json
    assert body["missing_data"]["number_of_employees"] > 0
    assert body["timings"]["training_seconds"] > 0
    packages = {row["package"]: row for row in body["dependencies"]}
    assert packages["flask"]["installed"] and packages["flask"]["latest"] == "latest unknown"
    assert body["drift"] is None  # no drift test yet: cold start only


def test_a_new_release_is_served_without_a_restart(client, deployed):
    first = client.get("/health").json["release_id"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    second = deployed.pointer()["current"]
    assert second != first
    import time

    time.sleep(0.1)  # longer than the 0.05 s reload interval of this test's config
    assert client.post("/prediction", json=RECORD).json["release_id"] == second
    assert client.get("/scoring").json["release_id"] == second
    assert client.get("/diagnostics").json["drift"]["drift"] is True


def test_a_release_that_fails_its_hash_check_is_never_served(client, deployed):
    import time

    first = client.get("/health").json["release_id"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    deployed.write_config(base_config(api={"reload_interval_seconds": 0.05}))
    # Deploy, then damage the new release's model before the API looks at it.
    from churnlib.fsutil import atomic_write_json

    pointer_before = deployed.pointer()
    assert deployed.tick() == 0
    second = deployed.pointer()["current"]
    model = deployed.deployment / "releases" / second / "trainedmodel.pkl"
    model.write_bytes(model.read_bytes()[:-10])
    time.sleep(0.1)
    health = client.get("/health").json
    assert health["release_id"] == first
    assert f"release {second} not loaded" in health["warning"]
    assert client.post("/prediction", json=RECORD).json["release_id"] == first
    assert pointer_before["current"] == first
    atomic_write_json(deployed.deployment / "current.json", pointer_before)


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_the_fast_path_equals_the_pipeline_on_the_whole_test_set(tmp_path, algorithm):
    project = make_project(tmp_path / algorithm, config=base_config(model={"algorithm": algorithm}))
    assert project.tick() == 0
    model = load_deployed(project.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    test = read_test_data(project.root / "testdata", settings=project.config().schema, schema=schema)
    expected = model.pipeline.predict_proba(test[list(schema.feature_columns)])[:, 1]
    records = json.loads(test.drop(columns=[schema.target]).to_json(orient="records"))
    batch = records_to_batch(records, schema)
    fast = FastPredictor(model.pipeline, schema).probabilities(batch)
    assert np.max(np.abs(fast - expected)) <= 1e-9
    # and through HTTP, one record at a time
    client = create_app(project.config_path).test_client()
    for index in (0, 7, 123):
        reply = client.post("/prediction", json=records[index]).json
        assert abs(reply["predictions"][0]["probability"] - expected[index]) <= 1e-9


def test_the_fast_path_handles_unseen_categories_and_missing_values_like_the_pipeline(deployed):
    model = load_deployed(deployed.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    records = [dict(RECORD, plan="enterprise"), dict(RECORD, plan=None, number_of_employees=None)]
    frame = pd.DataFrame(records)
    frame["plan"] = frame["plan"].astype(object).where(frame["plan"].notna(), np.nan)
    expected = model.pipeline.predict_proba(frame[list(schema.feature_columns)])[:, 1]
    batch = records_to_batch(records, schema)
    fast = FastPredictor(model.pipeline, schema).probabilities(batch)
    assert np.max(np.abs(fast - expected)) <= 1e-9


# --- reasons, warnings, ids, MLflow forms (issue 9) ---------------------------------------------


def test_reasons_come_on_request_and_add_up_to_the_log_odds(client):
    plain = client.post("/prediction", json=RECORD).json["predictions"][0]
    assert "reasons" not in plain
    for kwargs in ({"query_string": "reasons=4", "json": RECORD},
                   {"json": {"records": [RECORD], "reasons": 4}},
                   {"json": {"dataframe_records": [RECORD], "params": {"reasons": 4}}}):
        prediction = client.post("/prediction", **kwargs).json["predictions"][0]
        reasons = prediction["reasons"]
        assert len(reasons) == 4 and {r["feature"] for r in reasons} == set(RECORD) - {"corporation"}
        assert [abs(r["contribution"]) for r in reasons] == sorted((abs(r["contribution"]) for r in reasons), reverse=True)
        assert prediction["base_value"] + sum(r["contribution"] for r in reasons) == pytest.approx(prediction["log_odds"], abs=1e-12)
        assert 1 / (1 + np.exp(-prediction["log_odds"])) == pytest.approx(prediction["probability"], abs=1e-12)
        assert prediction["probability"] == plain["probability"]
        plan = next(r for r in reasons if r["feature"] == "plan")
        assert plan["value"] == "basic" and plan["text"].startswith("plan = basic (")
        assert plan["text"].endswith(f"{plan['contribution']:+.2f})")
    top = client.post("/prediction?reasons=2", json=RECORD).json["predictions"][0]["reasons"]
    assert len(top) == 2


def _varied_records(count: int) -> list[dict]:
    """Records with missing numbers, unseen and missing categories, and large, small and negative values."""
    random = np.random.default_rng(19)
    plans = ["basic", "premium", "enterprise", None, "platinum"]
    records = []
    for index in range(count):
        numbers = {c: None if random.random() < 0.15 else float(random.choice([random.normal(200, 300), 0.004, -0.004,
                                                                                 1e6, 123.456789, 0]))
                   for c in ("lastmonth_activity", "lastyear_activity", "number_of_employees")}
        records.append({"corporation": f"c{index}", **numbers, "plan": plans[int(random.integers(0, len(plans)))]})
    return records


def test_reasons_of_a_few_records_are_those_of_the_same_records_in_a_large_batch(client):
    # A request of up to SMALL_BATCH records is explained a row at a time (row_reasons), a larger
    # one a column at a time (top_reasons, reason_texts, as the risk lists): the same reasons either way.
    records = _varied_records(60)
    whole = client.post("/prediction?reasons=4", json={"records": records}).json["predictions"]
    few = [item for start in range(0, 60, 3)
           for item in client.post("/prediction?reasons=4", json={"records": records[start:start + 3]}).json["predictions"]]
    one = [client.post("/prediction?reasons=4", json=record).json["predictions"][0] for record in records[:20]]

    def explained(items):  # (probabilities may differ in the last bit: BLAS sums a batch in its own order)
        return [(item["reasons"], item["log_odds"], item["base_value"]) for item in items]

    assert explained(few) == explained(whole) and explained(one) == explained(whole[:20])
    assert {r["text"].split(" (")[1].split(",")[0] for item in whole for r in item["reasons"]} >= {"raises risk", "lowers risk"}


def test_a_few_rows_are_scored_row_by_row_with_the_numbers_of_the_whole_batch(deployed):
    # Up to FEW_RECORDS rows, logistic regression is computed in plain Python a row at a time: the
    # same contributions and log-odds to the bit, probabilities but for the rounding of one sum.
    from churnlib.pipeline import FEW_RECORDS

    model = load_deployed(deployed.deployment)
    assert model.metadata["algorithm"] == "logistic_regression"
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    fast = FastPredictor(model.pipeline, schema)
    records = _varied_records(48)
    whole = records_to_batch(records, schema)
    probabilities, contributions = fast.probabilities(whole), fast.explain(whole)
    assert not whole.row_terms
    for start in range(0, len(records), FEW_RECORDS):
        few = records_to_batch(records[start:start + FEW_RECORDS], schema)
        rows = slice(start, start + FEW_RECORDS)
        assert np.max(np.abs(fast.probabilities(few) - probabilities[rows])) <= 1e-14
        explained = fast.explain(few)
        assert few.row_terms and not few.terms  # the row-by-row path, for both
        np.testing.assert_array_equal(explained.values, contributions.values[rows])
        np.testing.assert_array_equal(explained.log_odds, contributions.log_odds[rows])
        assert explained.base == contributions.base


def test_row_reasons_agree_with_top_reasons_and_reason_texts_on_ties_and_signed_zeros():
    from churnlib.pipeline import Batch, Contributions, reason_texts, row_reasons, shown_values, top_reasons

    schema = FrozenSchema(target="exited", id_columns=(), feature_columns=("a", "b", "plan", "c"),
                          categorical_columns=("plan",))
    values = np.array([[0.5, -0.5, 0.5, 0.0], [0.004, -0.004, 0.005, -0.005], [0.0, -0.0, 1e-300, -1e-300],
                       [0.125, 0.135, -0.145, 2.675], [-1e6, 3.0, 3.0, -3.0]])
    batch = Batch(numeric=np.array([[1.0, np.nan, 2.5], [0.0, -0.0, 1e300], [1.5e-7, 12345678.9, -2.0],
                                    [np.nan, np.nan, np.nan], [1.0, 2.0, 3.0]]),
                  categorical=[["basic", None, "x", "=1+1", "basic"]])
    contributions = Contributions(features=schema.feature_columns, base=0.3, values=values)
    for count in (1, 3, 4, 10):
        top = top_reasons(contributions, count)
        texts = reason_texts(contributions, shown_values(batch, schema), top)
        rows = row_reasons(contributions, batch, schema, count)
        assert [[schema.feature_columns.index(r["feature"]) for r in row] for row in rows] == top.tolist()
        assert [[r["text"] for r in row] for row in rows] == [list(row) for row in zip(*texts)]
        assert [[r["contribution"] for r in row] for row in rows] == [values[i, top[i]].tolist() for i in range(5)]
        shown = [[1.0, None, 2.5], [0.0, -0.0, 1e300], [1.5e-7, 12345678.9, -2.0], [None, None, None], [1.0, 2.0, 3.0]]
        given = [[shown[i][(0, 1, None, 2)[j]] if j != 2 else batch.categorical[0][i] for j in top[i].tolist()]
                 for i in range(5)]
        assert [[r["value"] for r in row] for row in rows] == given
        assert row_reasons(Contributions(schema.feature_columns, 0.3, rows=values.tolist()), batch, schema, count) == rows


def test_a_few_rows_log_odds_are_summed_in_python_as_numpy_sums_them():
    # A request's few rows get their log-odds from Python lists, summed in numpy's pairwise order, so
    # that they equal a large batch's np.add.reduce to the bit: rows of 1 to 300 features, values of
    # every magnitude (where the order of the additions shows), and signed zeros.
    from churnlib.pipeline import Contributions

    rng = np.random.default_rng(11)
    for width in [*range(1, 20), 23, 64, 127, 128, 129, 135, 136, 200, 300]:
        values = rng.normal(0, 1, (6, width)) * 10.0 ** rng.integers(-12, 12, (6, width))
        values[1] = -0.0
        values[2, ::2] = -0.0
        values[3] = np.where(values[3] > 0, 0.0, -0.0)
        for base in (0.0, -0.0, -1.75, 3e-17):
            numpy = Contributions(("x",) * width, base, values=values).log_odds
            python = Contributions(("x",) * width, base, rows=values.tolist()).log_odds_list()
            assert python == numpy.tolist(), width  # == on floats: -0.0 == 0.0, so the signs apart
            assert [math.copysign(1.0, v) for v in python] == np.copysign(1.0, numpy).tolist(), width


def test_a_reasons_contribution_is_written_from_its_cents_as_reason_texts_writes_it():
    # The few-record path writes a contribution from its whole number of cents; reason_texts formats
    # np.round(value, 2). Halves (rounded to even), signed zeros, tiny, huge and non-finite values.
    from churnlib.pipeline import _signed, _signed_cents

    rng = np.random.default_rng(7)
    values = [*rng.normal(0, 1, 20_000), *(rng.normal(0, 1, 20_000) * 10.0 ** rng.integers(-320, 308, 20_000)),
              *((k + 0.5) / 100 for k in range(-20_000, 20_000)), 0.0, -0.0, 0.005, -0.005, 2.675, -0.145,
              999999.994, 999999.995, -999999.995, 1e6, 5e-324, -5e-324, 1.7e308, float("inf"), float("-inf"), float("nan")]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = [_signed(value) for value in np.round(np.array(values), 2).tolist()]
    assert [_signed_cents(float(value)) for value in values] == expected


@pytest.mark.parametrize("query, body, message", [
    ("reasons=-1", RECORD, "reasons='-1': must be a whole number from 0 to 100"),
    ("reasons=three", RECORD, "must be a whole number"),
    ("reasons=101", RECORD, "must be a whole number"),
    ("", {"records": [RECORD], "reasons": "3"}, "'reasons' must be a whole number from 0 to 100"),
    ("", {"records": [RECORD], "reasons": True}, "'reasons' must be a whole number"),
    ("format=xml", RECORD, "format 'xml': use format=native or format=mlflow"),
])
def test_a_bad_reasons_or_format_request_is_a_400(client, query, body, message):
    reply = client.post("/prediction", query_string=query, json=body)
    assert reply.status_code == 400 and message in reply.json["error"]


@pytest.mark.parametrize("query, reasons, mlflow", [
    ("reasons=2&reasons=4", 2, False),  # a name given twice: its first value, as werkzeug's request.args
    ("reasons=%34", 4, False),  # percent-encoded
    ("reasons=+3", 3, False),  # a plus is a space
    ("&&format=mlflow&reasons=1&", 1, True),  # empty pairs skipped
    ("format=mlflow&x", 0, True),  # a name without a value
    ("reasons=%FF", None, False),  # bytes that are not UTF-8: kept percent-encoded, a 400 naming them
    ("reasons", None, False),  # present without a value: ''
])
def test_query_arguments_are_read_as_werkzeug_reads_them(client, query, reasons, mlflow):
    reply = client.post(f"/prediction?{query}", json=RECORD)
    if reasons is None:
        assert reply.status_code == 400 and "must be a whole number from 0 to 100" in reply.json["error"]
        return
    assert reply.status_code == 200, reply.json
    prediction = reply.json["predictions"][0]
    assert len(prediction.get("reasons", [])) == reasons and ("release_id" not in reply.json) == mlflow


def test_a_category_never_seen_in_training_is_a_warning_on_its_record(client):
    reply = client.post("/prediction", json=[RECORD, dict(RECORD, plan="platinum"), dict(RECORD, plan=None)])
    assert reply.status_code == 200
    first, unseen, missing = reply.json["predictions"]
    assert "warnings" not in first
    assert unseen["warnings"] == ["plan: 'platinum' never seen in training; scored as unknown"]
    assert missing["warnings"] == ["plan: missing, and the model saw no missing plan in training; scored as unknown"]


def test_a_category_that_differs_from_a_known_one_in_case_only_is_named_with_it(client):
    reply = client.post("/prediction", json=[dict(RECORD, plan="Basic"), dict(RECORD, plan=" PREMIUM ")])
    assert reply.status_code == 200
    basic, premium = reply.json["predictions"]
    assert basic["warnings"] == ["plan: 'Basic' never seen in training (categories are compared exactly: "
                                 "did you mean 'basic'?); scored as unknown"]
    assert "did you mean 'premium'?" in premium["warnings"][0]


def test_unknown_categories_can_be_refused(deployed):
    deployed.write_config(base_config(api={"unknown_categories": "reject"}))
    client = create_app(deployed.config_path).test_client()
    assert client.post("/prediction", json=RECORD).status_code == 200
    reply = client.post("/prediction", json=[RECORD, dict(RECORD, plan="platinum")])
    assert reply.status_code == 400
    assert reply.json["error"] == ("record 1: plan: 'platinum' never seen in training; nothing was scored "
                                   "(api.unknown_categories is \"reject\")")


def test_id_columns_come_back_under_the_callers_spelling(client):
    records = [dict({k: v for k, v in RECORD.items() if k != "corporation"}, **{"Corporation": "A-1"}),
               dict({k: v for k, v in RECORD.items() if k != "corporation"}, **{"Corporation": {"nested": 1}})]
    first, second = client.post("/prediction", json=records).json["predictions"]
    assert first["Corporation"] == "A-1" and "corporation" not in first
    assert "Corporation" not in second  # objects are not echoed
    csv_body = "CORPORATION,lastmonth_activity,lastyear_activity,number_of_employees,plan\nx,1,2,3,basic\n"
    [row] = client.post("/prediction", data=csv_body, content_type="text/csv").json["predictions"]
    assert row["CORPORATION"] == "x"


def test_mlflow_inputs_and_instances_forms_give_the_same_predictions(client):
    other = dict(RECORD, plan="premium", lastmonth_activity=3)
    columns = {c: [RECORD[c], other[c]] for c in RECORD}
    expected = [p["probability"] for p in client.post("/prediction", json=[RECORD, other]).json["predictions"]]
    for body in ({"instances": [RECORD, other]}, {"inputs": [RECORD, other]}, {"inputs": columns},
                 {"instances": [RECORD, other], "params": {"reasons": 1}}):
        reply = client.post("/prediction", json=body)
        assert reply.status_code == 200, (body, reply.json)
        assert [p["probability"] for p in reply.json["predictions"]] == expected


@pytest.mark.parametrize("body, message", [
    ({"inputs": [[1, 2, 3, 4]]}, "'inputs' holds rows without column names"),
    ({"instances": [[1, 2, 3, 4]]}, "'instances' holds rows without column names"),
    ({"inputs": {"plan": ["basic"], "lastmonth_activity": [1, 2]}}, "all of one length"),
    ({"inputs": {"plan": "basic"}}, "must map each column to a list of values"),
    ({"instances": "x"}, "'instances' must be a list of objects"),
])
def test_mlflow_forms_the_api_cannot_read_are_a_400_that_says_why(client, body, message):
    reply = client.post("/prediction", json=body)
    assert reply.status_code == 400 and message in reply.json["error"]


def test_a_client_that_asks_for_mlflows_reply_shape_gets_it(client):
    reply = client.post("/prediction?format=mlflow", json={"dataframe_records": [RECORD, RECORD]})
    assert reply.status_code == 200
    assert list(reply.json) == ["predictions"]
    assert reply.json["predictions"][0]["corporation"] == "abcd"
    assert set(reply.json["predictions"][0]) == {"churn", "probability", "corporation"}
    error = client.post("/prediction?format=mlflow", json={"records": []})
    assert error.status_code == 400 and list(error.json) == ["error"]


def test_a_release_served_through_predict_proba_answers_without_reasons_and_says_why(deployed):
    from helpers import release_with_an_extra_step

    release_with_an_extra_step(deployed)
    client = create_app(deployed.config_path).test_client()
    reply = client.post("/prediction?reasons=3", json=RECORD)
    assert reply.status_code == 200
    assert "reasons" not in reply.json["predictions"][0]
    assert reply.json["warning"].startswith("reasons are not available for this release: the fast path does not "
                                            "replay its pipeline")


def test_the_threshold_setting_decides_the_class_in_replies_and_scores(tmp_path):
    project = make_project(tmp_path / "low", config=base_config(model={"threshold": 0.3}))
    assert project.tick() == 0
    client = create_app(project.config_path).test_client()
    records = [dict(RECORD, lastmonth_activity=m, lastyear_activity=12 * m) for m in (1, 20, 60, 150, 400, 2000)]
    predictions = client.post("/prediction", json=records).json["predictions"]
    probabilities = [p["probability"] for p in predictions]
    assert any(0.3 < p <= 0.5 for p in probabilities)  # where 0.3 and 0.5 disagree
    assert [p["churn"] for p in predictions] == [int(p > 0.3) for p in probabilities]
    release = project.pointer()["current"]
    scores = json.loads((project.deployment / "releases" / release / "latestscore.json").read_text())
    assert scores["threshold"] == 0.3


def test_a_cached_read_that_failed_is_tried_again_not_remembered_as_nothing(tmp_path):
    from churnlib.serving import FileCache

    path = tmp_path / "record.json"
    path.write_text("{}")
    calls = []

    def compute():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("record.json: not valid JSON")
        return {"rows": 3}

    cache = FileCache(path, compute)
    with pytest.raises(ValueError, match="not valid JSON"):
        cache.get()
    assert cache.get() == {"rows": 3}  # the same file: read again, since the first read failed
    assert cache.get() == {"rows": 3} and len(calls) == 2  # and now remembered
