# Runs -> one long table per study -> paper-style tables and figures, all shown in the HTML report.


rule aggregate:
    input:
        metrics=eval_files_of("metrics.json", roles=("main", "sweep", "select")),
        configs=network_files_of("config.json"),
        records=record_files,
        info=f"runs/{{study}}/{SCALE}/model_info.json",
        curves=eval_files_of("curve.json"),
        references=reference_metrics,
    output:
        report("results/{study}.csv", caption="../report/table_csv.rst", category="{study}",
               subcategory="tables", labels={"study": "{study}", "item": "long table (CSV)"}),
        curves="results/{study}_curves.csv",
    log:
        "logs/results/{study}.aggregate.log",
    params:
        runs=run_meta,
        study=study_meta,
        references=reference_meta,
    localrule: True
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        "results/{study}.csv",
    output:
        md="results/{study}.md",
        tex="results/{study}.tex",
        summary="results/{study}_summary.csv",
        html=report("reports/{study}/table.html", caption="../report/table.rst", category="{study}",
                    subcategory="tables", labels={"study": "{study}", "item": "table"}),
    log:
        "logs/results/{study}.tables.log",
    params:
        study=study_meta,
    localrule: True
    script:
        "../scripts/tables.py"


rule figures:
    input:
        table="results/{study}.csv",
        grids=eval_files_of("grid.png"),
        curves="results/{study}_curves.csv",
    output:
        **{fig: report(f"reports/{{study}}/{fig}.png", caption=f"../report/{fig}.rst", category="{study}",
                       subcategory="figures", labels={"study": "{study}", "item": fig})
           for fig in FIGURES},
    log:
        "logs/results/{study}.figures.log",
    params:
        study=study_meta,
    localrule: True
    script:
        "../scripts/figures.py"


rule sweeps:
    input:
        table="results/{study}.csv",
    output:
        md="results/{study}_sweep.md",
        summary="results/{study}_sweep.csv",
        nfe=report("reports/{study}/fid_vs_nfe.png", caption="../report/fid_vs_nfe.rst", category="{study}",
                   subcategory="figures", labels={"study": "{study}", "item": "fid_vs_nfe"}),
        guidance=report("reports/{study}/fid_vs_guidance.png", caption="../report/fid_vs_guidance.rst",
                        category="{study}", subcategory="figures",
                        labels={"study": "{study}", "item": "fid_vs_guidance"}),
    log:
        "logs/results/{study}.sweeps.log",
    params:
        study=study_meta,
        sweep=sweep_meta,
    localrule: True
    script:
        "../scripts/sweeps.py"
