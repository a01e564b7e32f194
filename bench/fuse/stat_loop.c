#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int c, char**v){ struct stat st; int n=atoi(v[2]); struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
for(int i=0;i<n;i++) if(stat(v[1],&st)) {perror("stat");return 1;}
clock_gettime(CLOCK_MONOTONIC,&b); double s=(b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)/1e9; printf("%.0f stat/s\n", n/s); }
