# Entry points a newcomer needs; each target sets up first (idempotent, fast when nothing changed).
.PHONY: setup test demo clean

setup:
	bash tools/setup_env.sh

test: setup
	bash tools/run_tests.sh

demo: setup
	bash tools/run_demo.sh

clean:
	rm -rf .ws
