#!/usr/bin/env bash
# colcon build of clipseg_ros into a temp workspace, then the checks that `ros2 run` / `ros2 launch`
# need of the install: the ament index marker, share/clipseg_ros/{package.xml,launch,config},
# an executable lib/clipseg_ros/seg_node; the installed seg_node (from the install, not the source
# tree) starts with the bundled model and stops cleanly on SIGINT, and exits non-zero naming the
# file when given a missing model.
#
# colcon-core and colcon-ros come from PyPI into the venv: colcon runs setup.py with the venv's
# Python, so the installed scripts' shebang is a Python that has rclpy (as /usr/bin/python3 has
# with a ROS installation).  ament_index_python (it comes with the rclpy wheels) resolves the
# package the way ros2 run / ros2 launch do.  No ROS installation is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${VENV:-.venv}
PY=$REPO/$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check --no-input"

# DDS stays on this machine: shared-memory transport only, a domain id of our own, logs in a temp folder.
export FASTDDS_BUILTIN_TRANSPORTS="SHM?sockets_size=64MB"
export ROS_DOMAIN_ID=$((40 + $$ % 50))
WORK=$(mktemp -d -t clipseg_colcon.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export ROS_LOG_DIR=$WORK/roslog

fail() { echo "colcon check: FAILED: $*" >&2; exit 1; }

$PIP install -q colcon-core==0.21.3 colcon-ros==0.5.0 2>&1 \
  | grep -v "^WARNING: Location" || true
"$PY" -c "import colcon_core, colcon_ros, ament_index_python" || fail "colcon-core / colcon-ros / ament_index_python missing"

# A workspace with the package's committed files (what a clone into src/ would have).
mkdir -p "$WORK/ws/src/clipseg_ros"
git ls-files -z | tar --null -cf - -T - | tar -xf - -C "$WORK/ws/src/clipseg_ros"
cd "$WORK/ws"
start=$(date +%s)
"$REPO/$VENV/bin/colcon" --log-base log build --event-handlers console_direct+ \
  >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "colcon build"; }
grep -q "Finished <<< clipseg_ros" "$WORK/build.log" || { cat "$WORK/build.log"; fail "clipseg_ros not built"; }
echo "colcon build: ok ($(( $(date +%s) - start )) s)"

PREFIX=$WORK/ws/install/clipseg_ros
for f in share/ament_index/resource_index/packages/clipseg_ros share/clipseg_ros/package.xml \
         share/clipseg_ros/launch/seg.launch.py share/clipseg_ros/config/params.yaml \
         share/clipseg_ros/config/seg.rviz; do
  [ -f "$PREFIX/$f" ] || fail "missing $f in the install"
done
for f in $(cd "$WORK/ws/src/clipseg_ros" && ls launch/*.launch.py config/*); do   # every launch and config file
  [ -f "$PREFIX/share/clipseg_ros/$f" ] || fail "missing share/clipseg_ros/$f in the install"
done
[ -x "$PREFIX/lib/clipseg_ros/seg_node" ] || fail "lib/clipseg_ros/seg_node is not an executable file"
# the environment a user gets from `source install/setup.bash`
# shellcheck disable=SC1091
set +u   # colcon's setup scripts read unset variables
. "$WORK/ws/install/setup.sh"
set -u
cd /   # nothing importable from the current folder
"$PY" - "$PREFIX" <<'PYEOF' || fail "installed layout"
import os, sys
from pathlib import Path
from ament_index_python.packages import get_package_prefix, get_package_share_directory

prefix = Path(sys.argv[1]).resolve()
assert Path(get_package_prefix("clipseg_ros")).resolve() == prefix, get_package_prefix("clipseg_ros")
share = Path(get_package_share_directory("clipseg_ros"))
for rel in ("package.xml", "launch/seg.launch.py", "config/params.yaml", "config/seg.rviz"):
    assert (share / rel).is_file(), rel
exe = prefix / "lib" / "clipseg_ros" / "seg_node"        # where `ros2 run clipseg_ros seg_node` looks
assert os.access(exe, os.X_OK), exe
import clipseg_ros, clipseg_training
for mod in (clipseg_ros, clipseg_training):
    assert Path(mod.__file__).resolve().is_relative_to(prefix), f"{mod.__name__} imported from {mod.__file__}"
model = Path(clipseg_ros.__file__).parent / "models" / "default.clipseg"
assert model.is_file() and model.stat().st_size > 1_000_000, model
print("install layout: ok", exe.relative_to(prefix.parent.parent))
PYEOF

SEG_NODE=$PREFIX/lib/clipseg_ros/seg_node
# 1. a missing model: non-zero exit, the file named
missing=$WORK/no-such-dir/missing.clipseg
set +e
out=$(timeout 120 "$SEG_NODE" --ros-args -p "model:=$missing" -p device:=cpu -p backend:=onnxruntime 2>&1)
code=$?
set -e
[ "$code" -ne 0 ] && [ "$code" -ne 124 ] || { echo "$out"; fail "seg_node with a missing model exited $code"; }
grep -qF "$missing" <<<"$out" || { echo "$out"; fail "seg_node's error does not name $missing"; }
echo "seg_node, missing model: exit $code, names the file"

# 2. the bundled model: the node comes up (its start-up line), then SIGINT stops it with status 0
log=$WORK/seg_node.log
: >"$log"
"$SEG_NODE" --ros-args -p device:=cpu -p backend:=onnxruntime -p threads:=1 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "segmenting /image with " "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "seg_node exited during start-up"; }
  sleep 0.1
done
grep -q "segmenting /image with $PREFIX/lib/python" "$log" || { kill -9 "$pid" 2>/dev/null; cat "$log"; fail "seg_node did not start with the installed default model"; }
kill -INT "$pid"
set +e
for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; cat "$log"; fail "seg_node did not stop on SIGINT"; }
wait "$pid"
code=$?
set -e
[ "$code" -eq 0 ] || { cat "$log"; fail "seg_node exited $code on SIGINT"; }
echo "seg_node, bundled model: started, stopped on SIGINT with 0"
echo "colcon check: passed"
