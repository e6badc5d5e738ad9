"""Many scenes in one run: the scene list (`scenelist`), the scheduler in this process or on Ray
(`scheduler`, `ray_workers`), the driver's side of the run (`batch`), the run record (`record`),
how workers load the pipeline (`source`) and progress (`report`). Every scene runs through
`copgen_rt.scenes.run` exactly as a single scene does."""
