#!/usr/bin/env bash
# Copies the header-only libraries the build needs into the git-ignored .carry/,
# for a machine that has meson and a compiler but no package manager (the GPU
# machine): range-v3 (meson.build looks in .carry/range-v3/include), Eigen and
# Catch2 (found through .carry/bin/pkg-config, a stand-in that answers for
# those two; put it first on PATH there when `pkg-config --exists eigen3`
# fails). Run it here, where tools/setup-deps.sh installed the packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
carry="$root/.carry"
mkdir -p "$carry/range-v3/include" "$carry/inc/c2" "$carry/bin"
for d in range meta concepts std; do cp -r "/usr/include/$d" "$carry/range-v3/include/"; done
cp -r /usr/include/eigen3 "$carry/inc/"
cp -r /usr/include/catch2 "$carry/inc/c2/"
eigen=$(pkg-config --modversion eigen3)
catch=$(pkg-config --modversion catch2)
cat > "$carry/bin/pkg-config" <<STANDIN
#!/bin/bash
# Stand-in pkg-config (tools/carry-deps.sh): eigen3 and catch2 from .carry/inc, nothing else.
inc=\$(cd "\$(dirname "\$(readlink -f "\$0")")/../inc" && pwd)
module=""; for a in "\$@"; do case "\$a" in -*) ;; *) module="\$a";; esac; done
case "\$module" in
  eigen3) version=$eigen; cflags="-I\$inc/eigen3";;
  catch2) version=$catch; cflags="-I\$inc/c2";;
  "") [ "\${1:-}" = --version ] && { echo 0.29.2; exit 0; }; exit 1;;
  *) exit 1;;
esac
for a in "\$@"; do
  case "\$a" in
    --modversion) echo "\$version"; exit 0;;
    --cflags*) echo "\$cflags"; exit 0;;
    --libs*|--variable*|--print-variables) echo; exit 0;;
  esac
done
exit 0
STANDIN
chmod +x "$carry/bin/pkg-config"
echo "carry-deps: $(du -sh "$carry" | cut -f1) in $carry"
