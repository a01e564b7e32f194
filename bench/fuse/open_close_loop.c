#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
int main(int c, char**v){ int n=atoi(v[2]); struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
for(int i=0;i<n;i++){ int fd=open(v[1],O_RDONLY); if(fd<0){perror("open");return 1;} close(fd);}
clock_gettime(CLOCK_MONOTONIC,&b); double s=(b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)/1e9; printf("%.0f open+close/s\n", n/s); }
