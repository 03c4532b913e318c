export FUSELAB=$PWD/gpu/fuselab
R=$OUT/res; mkdir -p $R
for w in default 4 default 4 8; do
  if [ $w = default ]; then unset TOKIO_WORKER_THREADS; else export TOKIO_WORKER_THREADS=$w; fi
  i=$((i+1))
  echo "== workers $w (run $i)"
  WARMUP=2 PRECONNECT=1200 RATE=1100 N=11000 PORT=$((19000 + i)) timeout 100 bash harness/http/bench/client-overhead.sh $R/w$w-$i | grep -E "streams|TTFT  |ITL  |PASS|FAIL|^ +[0-9]+ "
  rm -f $R/w$w-$i/run/tokens.parquet $R/w$w-$i/trace.jsonl
done
tar czf $OUT/res.tgz -C $OUT res
