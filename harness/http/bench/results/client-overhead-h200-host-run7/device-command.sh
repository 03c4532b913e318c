# Run 7 (sixth session), two device commands on the same build (fuselab at the sixth session's
# final kernel code; the HTTP code unchanged since run 6). First command ("probe/", after the
# kernel checks):
PART=overhead CASES="1100:2:1200 1100:2:1200:0-3:4-15:1 1100:2:1200:0-7:8-15:1 1100:2:1200:::2 1100:2:1200:0-3:4-15:2 1100:2:1200:0-7:8-15:2" \
  bash harness/http/bench/device-run.sh
# Second command (after `device-run.sh sanitize-checks`; the folders here; the cases were
# written with one colon too many, which named the unpinned runs "...-p1200-:N", renamed "-all-N"):
PART=overhead CASES="1100:2:1200:::1 1100:2:1200:0-3:4-15:1 1100:2:1200:::2 1100:2:1200:0-3:4-15:2 1100:2:1200:::3 1100:2:1200:0-3:4-15:3" \
  bash harness/http/bench/device-run.sh
