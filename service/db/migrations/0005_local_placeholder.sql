-- local placeholder (never committed): 0005 belongs to another branch
SELECT 1;
