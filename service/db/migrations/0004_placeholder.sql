-- local placeholder (not committed): another wave-2 branch owns 0004
SELECT 1;
