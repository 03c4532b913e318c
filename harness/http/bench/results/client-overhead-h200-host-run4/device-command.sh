export FUSELAB=$PWD/gpu/fuselab
R=$OUT/res; mkdir -p $R
nproc
for case in 1100:2:1200 1100:2:1200 1000:2:0 1100:0:1200; do
  IFS=: read -r rate warm pre <<< "$case"
  i=$((i+1)); name="r$rate-w$warm-p$pre-$i"
  echo "== $name"
  WARMUP=$warm PRECONNECT=$pre RATE=$rate N=$((rate * 10)) PORT=$((19000 + i)) timeout 100 bash harness/http/bench/client-overhead.sh $R/$name > $R/$name.out 2>&1
  grep -E "streams|TTFT  |ITL  |send lag|PASS|FAIL|^ +[0-9]+ " $R/$name.out
  rm -f $R/$name/run/tokens.parquet $R/$name/trace.jsonl
done
tar czf $OUT/res.tgz -C $OUT res
