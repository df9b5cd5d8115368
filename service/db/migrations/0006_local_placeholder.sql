-- local placeholder (never committed): 0006 belongs to another branch
SELECT 1;
