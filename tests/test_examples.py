"""Real data nobody here wrote (Iranian churn, UCI 563), and the shipped sample data's generator."""

import shutil

from helpers import IRANIAN, Project, run_script


def iranian_project(tmp_path) -> Project:
    root = tmp_path / "iranian"
    shutil.copytree(IRANIAN, root, ignore=shutil.ignore_patterns("ingesteddata", "models", "production_deployment", "logs"))
    for extra in ("customer_churn_1.csv", "customer_churn_2.csv", "customer_churn_synthetic_6.csv"):
        (root / "sourcedata" / extra).unlink(missing_ok=True)
    return Project(root)


def test_iranian_file_2_is_flagged_as_drifted_and_synthetic_6_is_not(tmp_path):
    project = iranian_project(tmp_path)
    assert project.tick() == 0
    first = project.last_run()
    assert first["decision"] == "cold_start"
    assert first["ingest"]["accepted"][0]["name"] == "customer_churn_0.csv"
    # messy headers ("Call  Failure") are normalised
    assert "call_failure" in project.record()["schema"]["feature_columns"]

    shutil.copy(project.root / "later" / "customer_churn_synthetic_6.csv", project.source)
    assert project.tick() == 0
    synthetic = project.last_run()["data_drift"]
    assert synthetic["tested"] and synthetic["drift"] is False and synthetic["drifted_features"] == []
    assert project.pointer()["current"] == first["deployed_release_after"]

    shutil.copy(project.root / "later" / "customer_churn_2.csv", project.source)
    assert project.tick() == 0
    drifted = project.last_run()["data_drift"]
    assert drifted["drift"] is True
    assert drifted["release_id"] == first["deployed_release_after"]  # tested against the file-0 model
    assert {"call_failure", "charge_amount", "subscription_length"} <= set(drifted["drifted_features"])
    reports = list((project.deployment / "releases").glob("*/report.html"))
    assert reports and all(report.stat().st_size < 1_000_000 for report in reports)  # 13 features, 6 drifted


def test_the_sample_data_generator_reproduces_the_shipped_files():
    result = run_script("samples/generate.py", "--check")
    assert result.returncode == 0, result.stderr
